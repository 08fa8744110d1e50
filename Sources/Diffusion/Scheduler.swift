import Tensors

/// A sampler of the reverse process, as a loop of model calls: call i evaluates the network at
/// `timesteps[i]` on `scaleModelInput(x, index: i)` and hands its output to `step(_:index:...)`,
/// which returns the next x. The loop starts from N(0, I) noise times `initNoiseSigma`. DDPM and
/// DDIM take one call per step; DPM-Solver++ keeps its past outputs, Heun calls twice per step
/// (so `step` is mutating, and a copy of a scheduler starts a fresh loop). Steps are counted, never
/// looked up by timestep, so schedules that repeat a timestep just work. Each holds the
/// `NoiseSchedule` it was given and never recomputes betas. `SamplerKind` makes them by class.
public protocol Scheduler: Sendable {
    var config: SchedulerConfig { get }
    var schedule: NoiseSchedule { get }
    /// The network's timestep at each model call, in order (fractional for the sigma-based samplers).
    var timesteps: [Float] { get }
    /// The standard deviation of the starting noise.
    var initNoiseSigma: Float { get }
    /// Chooses the inference timesteps for `count` steps by the config's `timestep_spacing`.
    mutating func setTimesteps(_ count: Int) throws
    /// The network's input at call `index` (the sigma-based samplers divide by sqrt(sigma^2 + 1)).
    func scaleModelInput(_ sample: Tensor, index: Int) -> Tensor
    /// Whether the step after call `index` adds fresh noise (so the caller must supply it).
    func needsNoise(index: Int) -> Bool
    /// The step after model call `index`. `noise` is standard normal noise of the sample's shape when `needsNoise`.
    mutating func step(_ modelOutput: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep
    /// A clean image noised to the level of call `index`, as the loop holds its sample there
    /// (diffusers' `add_noise`): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, or x_0 + sigma eps.
    func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor
    /// Model calls per step: 1, or 2 for Heun.
    var order: Int { get }
}

public struct SchedulerStep: Sendable {
    /// x_{t_prev}.
    public let previousSample: Tensor
    /// The model's estimate of x_0 (after clipping or thresholding).
    public let predictedOriginal: Tensor
}

public enum SchedulerError: Error, CustomStringConvertible, Equatable {
    case stepCount(Int, trainTimesteps: Int)
    case negativeEta(Float)
    case infiniteSigma(String)

    public var description: String {
        switch self {
        case let .stepCount(n, t): "cannot sample with \(n) steps: choose 1 to \(t) (the model's num_train_timesteps)"
        case let .negativeEta(eta): "eta must be 0 or more (0: deterministic DDIM, 1: DDPM's variance), is \(eta)"
        case let .infiniteSigma(name): "\(name) works in sigma = sqrt((1 - abar) / abar), which rescale_betas_zero_snr makes infinite at the last timestep"
        }
    }
}

extension Scheduler {
    public var initNoiseSigma: Float { 1 }
    public func scaleModelInput(_ sample: Tensor, index: Int) -> Tensor { sample }
    public var order: Int { 1 }
    /// N(0, I) noise as the loop's first sample: times `initNoiseSigma`.
    public func startingSample(_ noise: Tensor) -> Tensor { initNoiseSigma == 1 ? noise : noise * initNoiseSigma }
    /// The number of steps (not model calls).
    public var stepCount: Int { (timesteps.count + order - 1) / order }

    public func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor {
        schedule.addNoise(original, noise: noise, timesteps: Array(repeating: Int(timesteps[index]), count: original.shape[0]))
    }

    /// One step, drawing the noise it needs from `rng`.
    public mutating func step(_ modelOutput: Tensor, index: Int, sample: Tensor, using rng: inout RandomGenerator) -> SchedulerStep {
        let noise = needsNoise(index: index) ? Tensor.randomNormal(sample.shape, using: &rng) : nil
        return step(modelOutput, index: index, sample: sample, noise: noise)
    }

    /// x_0 from the model output, clipped to +-clip_sample_range or dynamically thresholded as configured.
    func clippedOriginal(_ modelOutput: Tensor, sample: Tensor, timestep t: Int) -> Tensor {
        let x0 = schedule.originalSample(from: modelOutput, type: config.predictionType, sample: sample, timestep: t)
        if config.thresholding { return dynamicThreshold(x0, ratio: Float(config.dynamicThresholdingRatio), maxValue: Float(config.sampleMaxValue)) }
        if config.clipSample {
            return clamped(x0, Float(config.clipSampleRange))
        }
        return x0
    }
}

/// x with every value clamped to [-r, r] (clip_sample).
func clamped(_ x: Tensor, _ r: Float) -> Tensor {
    let out = x.copy()
    for i in 0..<out.count { out.pointer[i] = min(max(out.pointer[i], -r), r) }
    return out
}

/// A learned-variance model's output [N, 2C, H, W] split into the prediction and the variance
/// values, for samples of C channels (as diffusers splits it when the output has twice the
/// sample's channels); any other output as it is, with no variance.
public func splitVariance(_ modelOutput: Tensor, channels c: Int) -> (prediction: Tensor, variance: Tensor?) {
    guard modelOutput.shape[1] == 2 * c else { return (modelOutput, nil) }
    return (modelOutput.channels(0..<c), modelOutput.channels(c..<(2 * c)))
}

/// Inference timesteps by diffusers' spacings (descending): leading k (T / n) + offset, trailing
/// round(T - k T / n) - 1, linspace round(linspace(0, T - 1, n)).
func inferenceTimesteps(_ config: SchedulerConfig, count n: Int) throws -> [Int] {
    let t = config.numTrainTimesteps
    guard n >= 1 && n <= t else { throw SchedulerError.stepCount(n, trainTimesteps: t) }
    switch config.timestepSpacing {
    case .leading:
        return (0..<n).reversed().map { $0 * (t / n) + config.stepsOffset }
    case .trailing:
        let ratio = Double(t) / Double(n)
        return (0..<n).map { k in Int((Double(t) - Double(k) * ratio).rounded(.toNearestOrEven)) - 1 }
    case .linspace:
        return linspace(0, Double(t - 1), n).reversed().map { Int($0.rounded(.toNearestOrEven)) }
    }
}

/// Dynamic thresholding (Saharia et al. 2022, Imagen): per sample, s = the `ratio` quantile of
/// |x_0|, clamped to [1, maxValue]; x_0 is clamped to [-s, s] and divided by s.
public func dynamicThreshold(_ x0: Tensor, ratio: Float, maxValue: Float) -> Tensor {
    let batch = x0.shape[0], per = x0.count / batch
    let out = x0.copy()
    for n in 0..<batch {
        let p = out.pointer + n * per
        let sorted = (0..<per).map { abs(p[$0]) }.sorted()
        // torch.quantile's linear interpolation between order statistics
        let position = ratio * Float(per - 1), lo = Int(position.rounded(.down)), hi = min(lo + 1, per - 1)
        let q = sorted[lo] + (position - Float(lo)) * (sorted[hi] - sorted[lo])
        let s = min(max(q, 1), maxValue)
        for i in 0..<per { p[i] = min(max(p[i], -s), s) / s }
    }
    return out
}
