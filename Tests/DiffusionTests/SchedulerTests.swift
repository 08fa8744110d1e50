import Diffusion
import Foundation
import Testing
import Tensors
import TestSupport

let tiny = fixtures.appendingPathComponent("tiny-pipeline")

func load(_ name: String) throws -> Tensor { try NPY.readTensor(tiny.appendingPathComponent(name)) }

@Suite struct ReferenceTests {
    let config: SchedulerConfig

    init() throws { config = try SchedulerConfig.load(tiny.appendingPathComponent("scheduler/scheduler_config.json")) }

    @Test func configReadsDiffusersFile() {
        #expect(config.className == "DDPMScheduler")
        #expect(config.betaSchedule == .linear && config.varianceType == .fixedSmall && config.clipSample)
        #expect(config.numTrainTimesteps == 1000 && config.betaEnd == 0.02)
    }

    @Test func alphasCumprodMatchesDiffusers() throws {
        let expected = try load("alphas_cumprod.npy")
        let ours = NoiseSchedule(config).alphasCumprod
        #expect(ours.count == expected.count)
        var worst: Float = 0
        for i in 0..<ours.count { worst = max(worst, abs(ours[i] - expected.pointer[i]) / expected.pointer[i]) }
        #expect(worst < 1e-5, "worst relative error \(worst)")
    }

    @Test(arguments: [999, 500, 1])
    func ddpmStepMatchesDiffusers(t: Int) throws {
        let scheduler = DDPMScheduler(config: config)
        let out = scheduler.step(try load("ddpm_step_t\(t)_model_output.npy"), timestep: t,
                                 sample: try load("ddpm_step_t\(t)_sample.npy"), noise: try load("ddpm_step_t\(t)_noise.npy"))
        let expected = try load("ddpm_step_t\(t)_prev_sample.npy")
        var worst: Float = 0
        for i in 0..<expected.count {
            let e = expected.pointer[i], d = abs(out.previousSample.pointer[i] - e)
            worst = max(worst, t == 1 ? d : d / max(abs(e), 1e-3))
        }
        #expect(worst < (t == 1 ? 2e-4 : 1e-5), "t = \(t): worst error \(worst)")
    }

    @Test func ddimTimestepsMatchDiffusers() throws {
        var ddim = try DDIMScheduler(config: config)
        try ddim.setTimesteps(10)
        let expected = try NPY.read(tiny.appendingPathComponent("ddim_timesteps.npy")).values.map { Float($0) }
        #expect(ddim.timesteps == expected)
    }
}

@Suite struct ScheduleTests {
    @Test func timestepSpacings() throws {
        var c = SchedulerConfig()
        var s = DDPMScheduler(config: c)
        try s.setTimesteps(10)
        #expect(s.timesteps == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
        c.stepsOffset = 1
        s = DDPMScheduler(config: c)
        try s.setTimesteps(4)
        #expect(s.timesteps == [751, 501, 251, 1])
        c.timestepSpacing = .trailing
        s = DDPMScheduler(config: c)
        try s.setTimesteps(3)
        #expect(s.timesteps == [999, 666, 332])  // round(1000 - k 333.33) - 1
        c.timestepSpacing = .linspace
        s = DDPMScheduler(config: c)
        try s.setTimesteps(4)
        #expect(s.timesteps == [999, 666, 333, 0])
        #expect(s.previousTimestep(666) == 333 && s.previousTimestep(0) == -1)
        #expect(throws: SchedulerError.stepCount(1001, trainTimesteps: 1000)) { try s.setTimesteps(1001) }
        #expect(throws: SchedulerError.stepCount(0, trainTimesteps: 1000)) { try s.setTimesteps(0) }
    }

    @Test func cosineScheduleEndpoints() {
        var c = SchedulerConfig()
        c.betaSchedule = .cosine
        let s = NoiseSchedule(c)
        func f(_ t: Double) -> Double { pow(cos((t + 0.008) / 1.008 * .pi / 2), 2) }
        // abar_0 = f(1/T) / f(0); the last beta is capped at 0.999; abar_T ~ 0
        #expect(abs(Double(s.alphasCumprod[0]) - f(0.001) / f(0)) < 1e-7)
        #expect(s.betas.last == 0.999)
        #expect(s.alphasCumprod.last! < 1e-6)
        #expect(zip(s.betas, s.betas.dropFirst()).allSatisfy { $0 <= $1 })
    }

    @Test func scaledLinearAndZeroSNR() {
        var c = SchedulerConfig()
        c.betaSchedule = .scaledLinear
        c.betaStart = 0.00085; c.betaEnd = 0.012
        let s = NoiseSchedule(c)
        #expect(abs(s.betas[0] - 0.00085) < 1e-9 && abs(s.betas[999] - 0.012) < 1e-8)
        #expect(abs(s.betas[500] - Float(pow(0.00085.squareRoot() + (0.012.squareRoot() - 0.00085.squareRoot()) * 500 / 999, 2))) < 1e-8)
        c.rescaleBetasZeroSNR = true
        let z = NoiseSchedule(c)
        #expect(z.alphasCumprod.last! == 0)
        #expect(abs(z.alphasCumprod[0] - s.alphasCumprod[0]) < 1e-6)
    }

    @Test func trainedBetasAreUsedAsGiven() {
        var c = SchedulerConfig()
        c.numTrainTimesteps = 3
        c.trainedBetas = [0.1, 0.2, 0.5]
        #expect(NoiseSchedule(c).alphasCumprod == [0.9, Float(0.9) * 0.8, Float(0.9) * 0.8 * 0.5])
    }
}

@Suite struct PropertyTests {
    let schedule = NoiseSchedule(SchedulerConfig())

    /// q(x_t | x_0) has mean sqrt(abar_t) x_0 and variance 1 - abar_t.
    @Test(arguments: [0, 100, 500, 999])
    func forwardMoments(t: Int) {
        var rng = RandomGenerator(seed: UInt64(t))
        let n = 100_000
        let x0 = Tensor(shape: [n, 1], repeating: 0.7)
        let xt = schedule.addNoise(x0, noise: Tensor.randomNormal([n, 1], using: &rng), timesteps: Array(repeating: t, count: n))
        let v = xt.scalars.map(Double.init)
        let mean = v.reduce(0, +) / Double(n), variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)
        let abar = Double(schedule.alphasCumprod[t])
        #expect(abs(mean - abar.squareRoot() * 0.7) < 4 * (1 - abar).squareRoot() / Double(n).squareRoot() + 1e-6)
        #expect(abs(variance - (1 - abar)) < 0.02 * (1 - abar) + 1e-9)
    }

    @Test func originalSampleRecoveredFromEpsilonAndVelocity() {
        let x0 = randomTensor([3, 2, 4, 4], seed: 1), eps = randomTensor([3, 2, 4, 4], seed: 2)
        for t in [5, 400, 990] {
            let ts = [t, t, t]
            let xt = schedule.addNoise(x0, noise: eps, timesteps: ts)
            let v = schedule.velocity(x0, noise: eps, timesteps: ts)
            #expect(maxAbsDifference(schedule.originalSample(from: eps, type: .epsilon, sample: xt, timestep: t), x0) < 2e-3)
            #expect(maxAbsDifference(schedule.originalSample(from: v, type: .vPrediction, sample: xt, timestep: t), x0) < 1e-5)
            #expect(maxAbsDifference(schedule.epsilon(from: v, type: .vPrediction, sample: xt, timestep: t), eps) < 1e-5)
            #expect(maxAbsDifference(schedule.epsilon(from: x0, type: .sample, sample: xt, timestep: t), eps) < 1e-3)
        }
    }

    /// The DDPM step's mean and standard deviation against eq. 7 of Ho et al. in Double.
    @Test(arguments: [SchedulerConfig.VarianceType.fixedSmall, .fixedLarge, .fixedSmallLog, .fixedLargeLog])
    func ddpmPosteriorMatchesEquation7(variance: SchedulerConfig.VarianceType) {
        var c = SchedulerConfig()
        c.predictionType = .sample
        c.clipSample = false
        c.varianceType = variance
        let s = DDPMScheduler(config: c)
        let x0 = randomTensor([2, 1, 3, 3], seed: 3), xt = randomTensor([2, 1, 3, 3], seed: 4), z = randomTensor([2, 1, 3, 3], seed: 5)
        // eq. 7 in Double, from the schedule's float32 abar (whose 1 - abar near t = 0 carries
        // float32 cancellation in any implementation)
        let abars = NoiseSchedule(c).alphasCumprod.map(Double.init)
        for t in [1, 10, 500, 999] {
            let abar = abars[t], abarPrev = abars[t - 1]
            let beta = 1 - abar / abarPrev
            let meanStep = s.step(x0, timestep: t, sample: xt, noise: Tensor(zeros: xt.shape)).previousSample
            let noisyStep = s.step(x0, timestep: t, sample: xt, noise: z).previousSample
            let posteriorVariance: Double = (1 - abarPrev) / (1 - abar) * beta
            let small = variance == .fixedSmall || variance == .fixedSmallLog
            let sigma = (small ? posteriorVariance : beta).squareRoot()
            let x0Coefficient: Double = abarPrev.squareRoot() * beta / (1 - abar)
            let xtCoefficient: Double = (1 - beta).squareRoot() * (1 - abarPrev) / (1 - abar)
            for i in 0..<xt.count {
                let mean = x0Coefficient * Double(x0.pointer[i]) + xtCoefficient * Double(xt.pointer[i])
                // beta = 1 - abar_t / abar_t' in float32 carries an absolute error of about one
                // ulp of 1 (6e-8), relative 6e-8 / beta: up to 6e-4 at t = 1
                let tolerance = 1e-5 + 1.2e-7 / beta * (abs(Double(x0.pointer[i])) + abs(Double(xt.pointer[i])))
                #expect(abs(Double(meanStep.pointer[i]) - mean) < tolerance, "t = \(t)")
                #expect(abs(Double(noisyStep.pointer[i] - meanStep.pointer[i]) - sigma * Double(z.pointer[i])) < 1e-5)
            }
        }
    }

    /// DDIM with eta = 1 over every timestep adds exactly DDPM's posterior noise.
    @Test func ddimWithEtaOneHasDDPMVariance() throws {
        var c = SchedulerConfig()
        c.clipSample = false
        let ddpm = DDPMScheduler(config: c)
        var ddim = try DDIMScheduler(config: c, eta: 1)
        try ddim.setTimesteps(1000)
        let out = randomTensor([1, 1, 2, 2], seed: 6), xt = randomTensor([1, 1, 2, 2], seed: 7), z = randomTensor([1, 1, 2, 2], seed: 8)
        for t in [1, 50, 500, 999] {
            #expect(abs(ddim.posteriorStandardDeviation(t) - ddpm.standardDeviation(t)) < 1e-6 * max(1, ddpm.standardDeviation(t)))
            let a = ddim.step(out, timestep: t, sample: xt, noise: z).previousSample
            let b = ddim.step(out, timestep: t, sample: xt, noise: Tensor(zeros: z.shape)).previousSample
            let ref = ddpm.step(out, timestep: t, sample: xt, noise: z).previousSample
            let refMean = ddpm.step(out, timestep: t, sample: xt, noise: Tensor(zeros: z.shape)).previousSample
            // same noise contribution, and (eta = 1 DDIM is DDPM) the same mean
            for i in 0..<z.count { #expect(abs((a.pointer[i] - b.pointer[i]) - (ref.pointer[i] - refMean.pointer[i])) < 1e-5) }
            #expect(maxAbsDifference(b, refMean) < 1e-4)
        }
    }

    @Test func clippingAndThresholding() {
        let x = Tensor(shape: [2, 4], [0.5, -3, 2, 0.1, 0.2, 0.3, -0.4, 0.1])
        // first sample: |x| sorted 0.1 0.5 2 3; the 0.5 quantile interpolates to 1.25
        let t = dynamicThreshold(x, ratio: 0.5, maxValue: 2)
        #expect(t.scalars.prefix(4).map { ($0 * 1000).rounded() / 1000 } == [0.4, -1, 1, 0.08])
        #expect(Array(t.scalars.suffix(4)) == [0.2, 0.3, -0.4, 0.1])  // s clamps up to 1: unchanged
        var c = SchedulerConfig()
        c.predictionType = .sample
        c.clipSampleRange = 0.5
        let step = DDPMScheduler(config: c).step(x, timestep: 0, sample: x, noise: nil)
        #expect(step.predictedOriginal.scalars.allSatisfy { abs($0) <= 0.5 })
    }

    @Test func minSNRWeights() {
        let t = [10, 500, 990]
        let w = schedule.minSNRWeights(timesteps: t, gamma: 5, predictionType: .epsilon)
        for (i, ti) in t.enumerated() { #expect(abs(w[i] - min(schedule.snr(ti), 5) / schedule.snr(ti)) < 1e-6) }
        #expect(w[0] < 1 && w[2] == 1)
        let pred = randomTensor([3, 4], seed: 9), target = randomTensor([3, 4], seed: 10)
        let weighted = diffusionLoss(prediction: pred, target: target, weights: [1, 0, 0]).item
        let first = (0..<4).map { pow(pred.pointer[$0] - target.pointer[$0], 2) }.reduce(0, +) / 12
        #expect(abs(weighted - first) < 1e-6)
    }
}

@Suite struct ConfigTests {
    func parse(_ json: String) throws -> SchedulerConfig {
        try SchedulerConfig(json: Data(json.utf8), source: URL(fileURLWithPath: "/m/scheduler_config.json"))
    }

    @Test func unknownKeysIgnoredAndRoundTrip() throws {
        let c = try parse(#"{"beta_schedule": "squaredcos_cap_v2", "some_future_key": [1, 2], "trained_betas": null, "clip_sample": false}"#)
        #expect(c.betaSchedule == .cosine && !c.clipSample)
        let back = try SchedulerConfig(json: c.json(), source: URL(fileURLWithPath: "/x"))
        #expect(back == c)
    }

    @Test(arguments: [
        (#"{"beta_schedule": "sigmoid"}"#, "'beta_schedule' 'sigmoid' is not supported"),
        (#"{"beta_start": -0.1}"#, "'beta_start' must lie in (0, 1)"),
        (#"{"beta_end": 1.5}"#, "'beta_end' must lie in (0, 1)"),
        (#"{"num_train_timesteps": 10, "trained_betas": [0.1, 0.2]}"#, "'trained_betas' has 2 values"),
        (#"{"num_train_timesteps": 2, "trained_betas": [0.1, 1.0]}"#, "every beta must lie in (0, 1)"),
        (#"{"num_train_timesteps": 0}"#, "'num_train_timesteps' must be at least 1"),
        (#"{"num_train_timesteps": "many"}"#, "'num_train_timesteps' must be a number"),
        (#"{"clip_sample": 3}"#, "'clip_sample' must be true or false"),
        (#"{"variance_type": "fixed_medium"}"#, "'variance_type' 'fixed_medium' is not supported"),
        (#"[1, 2]"#, "is not a JSON object"),
        ("not json", "is not a JSON object"),
    ])
    func badConfigsNameTheKey(json: String, message: String) {
        let error = #expect(throws: ConfigError.self) { try parse(json) }
        #expect(error?.description.contains(message) == true, "\(error?.description ?? "no error")")
        #expect(error?.description.contains("/m/scheduler_config.json") == true)
    }

    @Test func negativeEtaRejected() {
        #expect(throws: SchedulerError.negativeEta(-0.5)) { try DDIMScheduler(config: SchedulerConfig(), eta: -0.5) }
    }
}
