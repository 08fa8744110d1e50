import Datasets
import Diffusion
import Foundation
import Layers
import Testing
import Tensors
import TestSupport

/// The first `n` images of Fashion-MNIST's training set.
func fashionMNISTSlice(_ n: Int) throws -> ImageDataset {
    let all = try ImageDataset.load("fashion-mnist", channels: 1, size: 28)
    let s = Storage(uninitializedCount: n * 784)
    s.pointer.update(from: all.pixels.pointer, count: n * 784)
    return ImageDataset(pixels: s, count: n, channels: 1, height: 28, width: 28, source: all.source)
}

func tinyTrainer(seed: UInt64 = 0, steps: Int) -> Trainer {
    var rng = RandomGenerator(seed: seed)
    var options = TrainingOptions()
    options.steps = steps; options.batchSize = 8; options.learningRate = 1e-3; options.warmup = 20; options.seed = seed
    return Trainer(pipeline: Pipeline(unet: UNet2DModel(config: .tiny, using: &rng), schedulerConfig: SchedulerConfig()), options: options)
}

@Suite(.serialized) struct TrainingTests {
    /// `tiny`, 300 steps of batch 8 on 512 Fashion-MNIST images: the loss must fall well below its start.
    @Test func tinyLearnsFashionMNIST() throws {
        let data = try fashionMNISTSlice(512)
        let trainer = tinyTrainer(steps: 300)
        let sampler = BatchSampler(dataset: data, batchSize: 8, seed: 0, flip: false)
        let batches = BatchPrefetcher(sampler, startingAt: 0)
        var losses: [Float] = []
        for _ in 0..<300 { losses.append(trainer.train(on: batches.nextBatch())) }
        let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(50).reduce(0, +) / 50
        print("tiny on Fashion-MNIST: mean loss of steps 1-10 \(first), of steps 251-300 \(last)")
        #expect(first > 0.5, "initial loss \(first)")
        #expect(last < 0.3 * first, "loss \(first) -> \(last)")
        #expect(trainer.step == 300 && trainer.log.count == 300)
    }

    /// A batch that makes the loss NaN changes nothing: no step, no update, no log entry.
    @Test func nonFiniteLossUpdatesNothing() {
        let trainer = tinyTrainer(steps: 10)
        let before = trainer.unet.parameterTensors.map(\.scalars)
        let bad = Tensor(shape: [2, 1, 28, 28], repeating: .nan)
        #expect(!trainer.train(on: bad).isFinite)
        #expect(trainer.step == 0 && trainer.log.isEmpty && trainer.optimizer.step == 0)
        #expect(trainer.unet.parameterTensors.map(\.scalars) == before)
    }

    /// Gradient accumulation: batch 8 in 2 or 3 micro-batches (3 leaves them uneven) takes the same
    /// steps as batch 8 whole, losses and weights within 1e-5 relative after 10 steps (only the
    /// summation order differs), with and without min-SNR weights.
    @Test(arguments: [nil, Float(5)])
    func gradientAccumulationTakesTheSameSteps(minSNRGamma: Float?) throws {
        let data = try fashionMNISTSlice(128)
        let sampler = BatchSampler(dataset: data, batchSize: 8, seed: 0, flip: false)
        func run(_ micro: Int) -> (losses: [Float], weights: [Float]) {
            let trainer = tinyTrainer(steps: 10)
            trainer.options.gradientAccumulationSteps = micro
            trainer.options.minSNRGamma = minSNRGamma
            let batches = BatchPrefetcher(sampler, startingAt: 0)
            let losses = (0..<10).map { _ in trainer.train(on: batches.nextBatch()) }
            return (losses, trainer.unet.parameterTensors.flatMap(\.scalars))
        }
        let whole = run(1)
        for micro in [2, 3] {
            let split = run(micro)
            for (a, b) in zip(split.losses, whole.losses) { #expect(abs(a - b) <= 1e-5 * abs(b), "\(micro) micro-batches: loss \(a) vs \(b)") }
            let worst = zip(split.weights, whole.weights).map { abs($0 - $1) }.max()!
            let scale = whole.weights.map(abs).max()!
            #expect(worst <= 1e-5 * scale, "\(micro) micro-batches: weights differ by \(worst) (largest weight \(scale))")
        }
    }

    /// 30 steps at once, and 15 then a resume to 30, save identical bytes.
    @Test func resumeIsExact() throws {
        let data = try fashionMNISTSlice(256)
        let sampler = BatchSampler(dataset: data, batchSize: 8, seed: 0, flip: true)
        func run(_ trainer: Trainer, to steps: Int) {
            let batches = BatchPrefetcher(sampler, startingAt: trainer.step)
            while trainer.step < steps { trainer.train(on: batches.nextBatch()) }
        }
        let a = temporaryDirectory().appendingPathComponent("a"), b = temporaryDirectory().appendingPathComponent("b")
        let whole = tinyTrainer(steps: 30)
        run(whole, to: 30)
        try whole.save(to: a, dataSource: data.source)
        let half = tinyTrainer(steps: 15)
        run(half, to: 15)
        try half.save(to: b, dataSource: data.source)
        let resumed = try Trainer.resume(from: b, steps: 30)
        #expect(resumed.step == 15)
        run(resumed, to: 30)
        try resumed.save(to: b, dataSource: data.source)
        for file in ["unet/diffusion_pytorch_model.safetensors", "training/unet.safetensors", "training/optimizer.safetensors",
                     "training/state.json", "training/log.csv", "model_index.json", "scheduler/scheduler_config.json"] {
            let x = try Data(contentsOf: a.appendingPathComponent(file)), y = try Data(contentsOf: b.appendingPathComponent(file))
            #expect(x == y, "\(file) differs")
        }
        // an interrupted save (weights from another step) is refused on resume
        try Safetensors.write(whole.unet.stateDictionary, metadata: ["step": "7"], to: b.appendingPathComponent("training/unet.safetensors"))
        #expect(throws: FormatError.self) { try Trainer.resume(from: b) }
    }

    /// A 2-D diffusion: an MLP denoiser on a mixture of 8 Gaussians (radius 2, std 0.05), trained
    /// by the DDPM objective and sampled by DDPM ancestral steps. Samples must lie near the modes
    /// and cover all eight.
    @Test func twoDimensionalDiffusionCoversEveryMode() {
        var config = SchedulerConfig()
        config.numTrainTimesteps = 200
        config.betaSchedule = .cosine
        config.clipSample = false
        let schedule = NoiseSchedule(config)
        let centres: [(Float, Float)] = (0..<8).map { k in
            let angle = Double(k) * Double.pi / 4
            return (Float(2 * cos(angle)), Float(2 * sin(angle)))
        }
        var rng = RandomGenerator(seed: 11)
        let net = MLP(widths: [2 + 16, 128, 128, 128, 2], using: &rng)
        let optimizer = AdamW(parameters: net.parameterTensors, learningRate: 2e-3, weightDecay: 0)
        func predict(_ x: Tensor, _ t: [Int]) -> Tensor {
            let embedding = timestepEmbedding(t.map(Float.init), dimension: 16, flipSinToCos: true, downscaleFreqShift: 0)
            return net(concatChannels([x, embedding]))
        }
        let batch = 512
        for _ in 0..<3000 {
            var points: [Float] = []
            for _ in 0..<batch {
                let c = centres[rng.integer(below: 8)]
                points += [c.0 + 0.05 * rng.normal(), c.1 + 0.05 * rng.normal()]
            }
            let x0 = Tensor(shape: [batch, 2], points)
            let t = (0..<batch).map { _ in rng.integer(below: schedule.count) }
            let noise = Tensor.randomNormal([batch, 2], using: &rng)
            net.zeroGradients()
            meanSquaredError(predict(schedule.addNoise(x0, noise: noise, timesteps: t), t), noise).backward()
            optimizer.update()
        }
        var scheduler = DDPMScheduler(config: config)
        let n = 2000
        var x = Tensor.randomNormal([n, 2], using: &rng)
        for (i, t) in scheduler.timesteps.enumerated() {
            let eps = withoutGradients { predict(x, Array(repeating: Int(t), count: n)) }
            x = scheduler.step(eps, index: i, sample: x, using: &rng).previousSample
        }
        var near = 0, counts = [Int](repeating: 0, count: 8)
        for i in 0..<n {
            let (px, py) = (x.pointer[2 * i], x.pointer[2 * i + 1])
            let distances: [Float] = centres.map { c in
                let dx = px - c.0, dy = py - c.1
                return (dx * dx + dy * dy).squareRoot()
            }
            let k = distances.indices.min { distances[$0] < distances[$1] }!
            if distances[k] < 0.3 { near += 1; counts[k] += 1 }
        }
        print("2-D diffusion: \(near) of \(n) samples within 0.3 of a mode; per mode \(counts)")
        #expect(Float(near) / Float(n) > 0.9, "\(near) of \(n) samples within 0.3 of a mode")
        #expect(counts.allSatisfy { $0 > n / 40 }, "samples per mode: \(counts)")
    }
}
