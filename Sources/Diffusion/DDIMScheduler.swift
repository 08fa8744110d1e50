import Foundation
import Tensors

/// Denoising diffusion implicit models (Song, Meng & Ermon 2021), eq. 12:
///   x_{t'} = sqrt(abar_t') x_0 + sqrt(1 - abar_t' - sigma^2) eps + sigma z,
///   sigma = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t'),
/// where t' = t - T / n (diffusers' rule, whatever the spacing) and abar before step 0 is 1 with
/// `set_alpha_to_one`, else abar_0. eta = 0 is deterministic; eta = 1 over all T steps is DDPM.
public struct DDIMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public private(set) var timesteps: [Float]
    public let eta: Float
    /// Recompute eps from the clipped x_0 (diffusers' `use_clipped_model_output`).
    public let useClippedModelOutput: Bool

    public init(config: SchedulerConfig, eta: Float = 0, useClippedModelOutput: Bool = false) throws {
        guard eta >= 0 else { throw SchedulerError.negativeEta(eta) }
        self.config = config
        schedule = NoiseSchedule(config)
        self.eta = eta
        self.useClippedModelOutput = useClippedModelOutput
        timesteps = (0..<config.numTrainTimesteps).reversed().map(Float.init)
    }

    public mutating func setTimesteps(_ count: Int) throws {
        timesteps = try inferenceTimesteps(config, count: count).map(Float.init)
    }

    public func needsNoise(index: Int) -> Bool { eta > 0 }

    public func step(_ output: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        step(output, timestep: Int(timesteps[index]), sample: sample, noise: noise)
    }

    public func previousTimestep(_ t: Int) -> Int { t - config.numTrainTimesteps / timesteps.count }

    func alphaCumprod(_ t: Int) -> Float {
        t >= 0 ? schedule.alphasCumprod[t] : (config.setAlphaToOne ? 1 : schedule.alphasCumprod[0])
    }

    /// sigma_t of eq. 16 with eta = 1: the DDPM posterior standard deviation between t and t'.
    public func posteriorStandardDeviation(_ t: Int) -> Float {
        let abar = alphaCumprod(t), abarPrev = alphaCumprod(previousTimestep(t))
        return ((1 - abarPrev) / (1 - abar) * (1 - abar / abarPrev)).squareRoot()
    }

    public func step(_ output: Tensor, timestep t: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let modelOutput = splitVariance(output, channels: sample.shape[1]).prediction  // DDIM ignores a learned variance
        let abarPrev = alphaCumprod(previousTimestep(t))
        let x0 = clippedOriginal(modelOutput, sample: sample, timestep: t)
        let eps = useClippedModelOutput
            ? schedule.epsilon(from: x0, type: .sample, sample: sample, timestep: t)
            : schedule.epsilon(from: modelOutput, type: config.predictionType, sample: sample, timestep: t)
        let sigma = eta * posteriorStandardDeviation(t)
        var previous = linearCombination(abarPrev.squareRoot(), x0, max(0, 1 - abarPrev - sigma * sigma).squareRoot(), eps)
        if eta > 0 {
            guard let noise else { preconditionFailure("DDIM step with eta \(eta) needs noise") }
            previous = linearCombination(1, previous, sigma, noise)
        }
        return SchedulerStep(previousSample: previous, predictedOriginal: x0)
    }
}
