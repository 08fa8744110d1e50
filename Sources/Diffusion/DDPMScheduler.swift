import Foundation
import Tensors

/// Ancestral sampling of Ho et al. 2020. One step samples x_{t'} ~ q(x_{t'} | x_t, x_0) with the
/// model's x_0 (eq. 6-7), where t' is the next timestep in the list (t - 1 unless respaced):
///   mean = sqrt(abar_t') beta / (1 - abar_t) x_0 + sqrt(alpha) (1 - abar_t') / (1 - abar_t) x_t,
///   with alpha = abar_t / abar_t' and beta = 1 - alpha;
///   variance: fixed_small = (1 - abar_t') / (1 - abar_t) beta (the posterior's, clamped at 1e-20),
///   fixed_large = beta (the paper's sigma_t^2 = beta_t); the _log variants give the same standard
///   deviations (diffusers' fixed_large_log yields NaN there; this is its evident intent).
/// No noise is added at t = 0.
public struct DDPMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public private(set) var timesteps: [Float]

    public init(config: SchedulerConfig) {
        self.config = config
        schedule = NoiseSchedule(config)
        timesteps = (0..<config.numTrainTimesteps).reversed().map(Float.init)
    }

    public mutating func setTimesteps(_ count: Int) throws {
        timesteps = try inferenceTimesteps(config, count: count).map(Float.init)
    }

    public func needsNoise(index: Int) -> Bool { timesteps[index] > 0 }

    public func step(_ output: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        step(output, timestep: Int(timesteps[index]), sample: sample, noise: noise)
    }

    /// The timestep this one steps to: the next in the list, -1 after the last.
    public func previousTimestep(_ t: Int) -> Int {
        guard let i = timesteps.firstIndex(of: Float(t)) else { return t - 1 }
        return i + 1 < timesteps.count ? Int(timesteps[i + 1]) : -1
    }

    /// abar_t, abar_t', alpha_t = abar_t / abar_t' and beta_t = 1 - alpha_t for a step from t.
    func coefficients(_ t: Int) -> (abar: Float, abarPrev: Float, alpha: Float, beta: Float) {
        let prev = previousTimestep(t)
        let abar = schedule.alphasCumprod[t], abarPrev = prev >= 0 ? schedule.alphasCumprod[prev] : 1
        let alpha = abar / abarPrev
        return (abar, abarPrev, alpha, 1 - alpha)
    }

    /// The standard deviation of the noise added at step t.
    public func standardDeviation(_ t: Int) -> Float {
        let c = coefficients(t)
        switch config.varianceType {
        case .fixedSmall, .fixedSmallLog:
            return max((1 - c.abarPrev) / (1 - c.abar) * c.beta, 1e-20).squareRoot()
        case .fixedLarge, .fixedLargeLog:
            return c.beta.squareRoot()
        case .learned, .learnedRange:
            preconditionFailure("a learned variance comes from the model output (standardDeviations)")
        }
    }

    /// The standard deviation of the noise added at step t for each element, from the model's
    /// variance values when the variance is learned (diffusers' `_get_variance`): learned_range
    /// exp(0.5 (f log beta_t + (1 - f) log posterior variance)), f = (v + 1) / 2; learned sqrt(v).
    func standardDeviations(_ t: Int, variance: Tensor?) -> Tensor? {
        guard config.varianceType.isLearned, let variance else { return nil }
        let c = coefficients(t)
        let minLog = Foundation.log(max((1 - c.abarPrev) / (1 - c.abar) * c.beta, 1e-20)), maxLog = Foundation.log(c.beta)
        let out = variance.copy()
        for i in 0..<out.count {
            let v = variance.pointer[i]
            out.pointer[i] = config.varianceType == .learned
                ? v.squareRoot()
                : Foundation.exp(0.5 * ((v + 1) / 2 * maxLog + (1 - (v + 1) / 2) * minLog))
        }
        return out
    }

    public func step(_ output: Tensor, timestep t: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let (modelOutput, variance) = splitVariance(output, channels: sample.shape[1])
        require(!config.varianceType.isLearned || variance != nil,
                "variance_type \(config.varianceType.rawValue) needs a model output of twice the sample's channels")
        let c = coefficients(t)
        let x0 = clippedOriginal(modelOutput, sample: sample, timestep: t)
        let x0Coefficient = c.abarPrev.squareRoot() * c.beta / (1 - c.abar)
        let sampleCoefficient = c.alpha.squareRoot() * (1 - c.abarPrev) / (1 - c.abar)
        var previous = linearCombination(x0Coefficient, x0, sampleCoefficient, sample)
        if t > 0 {
            guard let noise else { preconditionFailure("DDPM step at t = \(t) needs noise") }
            if let deviations = standardDeviations(t, variance: variance) {
                previous = previous + deviations * noise
            } else {
                previous = linearCombination(1, previous, standardDeviation(t), noise)
            }
        }
        return SchedulerStep(previousSample: previous, predictedOriginal: x0)
    }
}
