import Tensors

/// A sampler of the reverse process: given the network's output at timestep t and the current
/// sample x_t, one `step` gives x_{t_prev}. DDPM and DDIM implement it; more slot in beside them.
/// Each holds the `NoiseSchedule` it was given and never recomputes betas.
public protocol Scheduler: Sendable {
    var config: SchedulerConfig { get }
    var schedule: NoiseSchedule { get }
    /// The reverse process's timesteps, descending; all T of them until `setTimesteps`.
    var timesteps: [Int] { get }
    /// Chooses `count` inference timesteps by the config's `timestep_spacing`.
    mutating func setTimesteps(_ count: Int) throws
    /// Whether `step` at timestep t adds fresh noise (so the caller must supply it).
    func needsNoise(at timestep: Int) -> Bool
    /// One reverse step. `noise` is standard normal noise of the sample's shape when `needsNoise`.
    func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep
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

    public var description: String {
        switch self {
        case let .stepCount(n, t): "cannot sample with \(n) steps: choose 1 to \(t) (the model's num_train_timesteps)"
        case let .negativeEta(eta): "eta must be 0 or more (0: deterministic DDIM, 1: DDPM's variance), is \(eta)"
        }
    }
}

extension Scheduler {
    /// One step, drawing the noise it needs from `rng`.
    public func step(_ modelOutput: Tensor, timestep: Int, sample: Tensor, using rng: inout RandomGenerator) -> SchedulerStep {
        let noise = needsNoise(at: timestep) ? Tensor.randomNormal(sample.shape, using: &rng) : nil
        return step(modelOutput, timestep: timestep, sample: sample, noise: noise)
    }

    /// x_0 from the model output, clipped to +-clip_sample_range or dynamically thresholded as configured.
    func clippedOriginal(_ modelOutput: Tensor, sample: Tensor, timestep t: Int) -> Tensor {
        let x0 = schedule.originalSample(from: modelOutput, type: config.predictionType, sample: sample, timestep: t)
        if config.thresholding { return dynamicThreshold(x0, ratio: Float(config.dynamicThresholdingRatio), maxValue: Float(config.sampleMaxValue)) }
        if config.clipSample {
            let r = Float(config.clipSampleRange), out = x0.copy()
            for i in 0..<out.count { out.pointer[i] = min(max(out.pointer[i], -r), r) }
            return out
        }
        return x0
    }
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
