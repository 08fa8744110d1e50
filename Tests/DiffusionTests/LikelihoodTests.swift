import Datasets
import Diffusion
import Foundation
import Layers
import Testing
import Tensors
import TestSupport

@Suite struct LikelihoodTests {
    /// The closed-form KL of two Gaussians against numerical integration of p log(p / q) in Double.
    @Test(arguments: [(0.3, -1.0, -0.2, 0.5), (0.0, 0.0, 0.0, 0.0), (1.5, -3.0, 1.4, -2.0)])
    func normalKLMatchesIntegration(c: (Double, Double, Double, Double)) {
        let (m1, lv1, m2, lv2) = c
        let s1 = exp(0.5 * lv1), s2 = exp(0.5 * lv2)
        func logDensity(_ x: Double, _ m: Double, _ s: Double) -> Double { -0.5 * log(2 * Double.pi) - log(s) - 0.5 * pow((x - m) / s, 2) }
        var integral = 0.0
        let h = s1 / 2000
        var x = m1 - 12 * s1
        while x < m1 + 12 * s1 {
            integral += exp(logDensity(x, m1, s1)) * (logDensity(x, m1, s1) - logDensity(x, m2, s2)) * h
            x += h
        }
        #expect(abs(normalKL(mean1: m1, logVariance1: lv1, mean2: m2, logVariance2: lv2) - integral) < 1e-6)
    }

    /// The discretised decoder at the mean, with the posterior variance at t = 1 of the linear
    /// schedule (beta_tilde_1 = 5.4532e-5): 0.90502 nats inside, 0.35344 in the open edge bins;
    /// the edge bins hold the mass beyond them, so an edge pixel far from the mean still scores.
    @Test func decoderBins() {
        let logScale = 0.5 * log(5.4532e-5)
        #expect(abs(-discretizedGaussianLogLikelihood(0.2, mean: 0.2, logScale: logScale) - 0.90502) < 1e-4)
        #expect(abs(-discretizedGaussianLogLikelihood(-1, mean: -1, logScale: logScale) - 0.35344) < 1e-4)
        #expect(abs(-discretizedGaussianLogLikelihood(1, mean: 1, logScale: logScale) - 0.35344) < 1e-4)
        #expect(abs(discretizedGaussianLogLikelihood(-1, mean: -1.5, logScale: logScale)) < 1e-9)
        #expect(discretizedGaussianLogLikelihood(0.2, mean: 0.9, logScale: logScale) == log(1e-12))
    }

    /// The whole bound of the tiny pipeline on one image, term by term, against an independent
    /// computation with diffusers' scheduler arrays and U-Net from the same noise
    /// (Tests/Fixtures/make_bits_per_dim.py).
    @Test func boundMatchesIndependentComputation() throws {
        let pipeline = try Pipeline.load(tiny)
        let x0 = try load("bpd_x0.npy"), noise = try load("bpd_noise.npy")
        let expected = try NPY.read(tiny.appendingPathComponent("bpd_terms.npy")).values
        let expectedPrior = try NPY.read(tiny.appendingPathComponent("bpd_prior.npy")).values[0]
        let bound = VariationalBound(config: pipeline.schedulerConfig)
        let (terms, prior) = bound.terms(of: x0, unet: pipeline.unet, batch: 100) { t in noise.slice(t..<(t + 1)) }
        let worst = zip(terms, expected).map { abs($0 - $1) }.max()!
        let total = terms.reduce(0, +) + prior, expectedTotal = expected.reduce(0, +) + expectedPrior
        print("tiny pipeline: \(total) bits/dim, the independent computation \(expectedTotal); worst term difference \(worst)")
        #expect(abs(total - expectedTotal) < 1e-3)
        #expect(worst < 1e-4)
        #expect(abs(prior - expectedPrior) < 1e-9)
    }

    /// A model that knows nothing scores worse than the bundled one, and a tiny model's bound falls
    /// as it trains on Fashion-MNIST.
    @Test func trainingLowersTheBound() throws {
        let test = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)
        let images = Tensor(shape: [2, 1, 28, 28], Array(UnsafeBufferPointer(start: test.pixels.pointer, count: 2 * 784)))
        var rng = RandomGenerator(seed: 8)
        let bundled = try Pipeline.load(bundledModel).bitsPerDimension(images, batch: 100, using: &rng).mean
        var weights = RandomGenerator(seed: 9)
        let untrainedModel = Pipeline(unet: UNet2DModel(config: .fmnist, using: &weights), schedulerConfig: SchedulerConfig())
        let untrained = untrainedModel.bitsPerDimension(images, batch: 100, using: &rng).mean

        let data = try fashionMNISTSlice(512)
        let trainer = tinyTrainer(steps: 200)
        let before = trainer.pipeline.bitsPerDimension(images, batch: 250, using: &rng).mean
        let batches = BatchPrefetcher(BatchSampler(dataset: data, batchSize: 8, seed: 0, flip: false), startingAt: 0)
        while trainer.step < 200 { trainer.train(on: batches.nextBatch()) }
        let after = trainer.pipeline.bitsPerDimension(images, batch: 250, using: &rng).mean
        print("bits/dim on 2 test images: bundled \(bundled), untrained fmnist \(untrained); tiny before \(before), after 200 steps \(after)")
        #expect(bundled < untrained)
        #expect(after < before)
    }
}

@Suite struct LearnedVarianceTests {
    /// The learned_range DDPM step against diffusers' for the same model output and noise.
    @Test(arguments: [999, 500, 1])
    func learnedRangeStepMatchesDiffusers(t: Int) throws {
        let dir = fixtures.appendingPathComponent("learned-range")
        func read(_ name: String) throws -> Tensor { try NPY.readTensor(dir.appendingPathComponent("t\(t)_\(name).npy")) }
        var config = SchedulerConfig()
        config.varianceType = .learnedRange
        let step = DDPMScheduler(config: config).step(try read("model_output"), timestep: t, sample: try read("sample"),
                                                      noise: try read("noise"))
        let difference = maxAbsDifference(step.previousSample, try read("prev_sample"))
        #expect(difference < (t == 1 ? 2e-4 : 1e-5), "largest difference \(difference)")
    }

    /// `tiny` with twice the output channels, trained by the hybrid loss on Fashion-MNIST: its
    /// L_vlb on a fixed held-out batch falls, and so does L_simple.
    @Test func hybridLossLearns() throws {
        var rng = RandomGenerator(seed: 21)
        var unetConfig = UNetConfig.tiny
        unetConfig.outChannels = 2
        var schedulerConfig = SchedulerConfig()
        schedulerConfig.varianceType = .learnedRange
        var options = TrainingOptions()
        options.batchSize = 8; options.learningRate = 1e-3; options.warmup = 20
        let trainer = Trainer(pipeline: Pipeline(unet: UNet2DModel(config: unetConfig, using: &rng), schedulerConfig: schedulerConfig),
                              options: options)
        let test = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)
        let x0 = Tensor(shape: [32, 1, 28, 28], Array(UnsafeBufferPointer(start: test.pixels.pointer, count: 32 * 784)))
        let timesteps = (0..<32).map { $0 * 31 }, noise = Tensor.randomNormal(x0.shape, using: &rng)
        let bound = VariationalBound(config: schedulerConfig), schedule = NoiseSchedule(schedulerConfig)
        let xt = schedule.addNoise(x0, noise: noise, timesteps: timesteps)
        func losses() -> (simple: Float, vlb: Float) {
            let out = withoutGradients { trainer.unet(xt, timesteps: timesteps.map(Float.init)) }
            let vlb = bound.learnedVarianceLoss(prediction: out.channels(0..<1), variance: out.channels(1..<2), x0: x0, xt: xt,
                                                timesteps: timesteps)
            return (meanSquaredError(out.channels(0..<1), noise).item, vlb.item)
        }
        let before = losses()
        let data = try fashionMNISTSlice(512)
        let batches = BatchPrefetcher(BatchSampler(dataset: data, batchSize: 8, seed: 0, flip: false), startingAt: 0)
        for _ in 0..<300 { trainer.train(on: batches.nextBatch()) }
        let after = losses()
        print("hybrid loss on a held-out batch: L_simple \(before.simple) -> \(after.simple), L_vlb (x T/1000) \(before.vlb) -> \(after.vlb)")
        #expect(after.vlb < 0.95 * before.vlb && after.simple < before.simple)
    }
}
