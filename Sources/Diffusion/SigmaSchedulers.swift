import Foundation
import Tensors

/// The noise levels of the samplers that work in sigma (Karras et al. 2022): x_t / sqrt(abar_t) =
/// x_0 + sigma_t eps with sigma_t = sqrt((1 - abar_t) / abar_t), so the network sees
/// x / sqrt(sigma^2 + 1). Holds sigma_t for t = 0..T-1 and maps between sigmas and timesteps.
struct SigmaTable: Sendable {
    let schedule: NoiseSchedule
    /// sigma_t, computed in float32 as diffusers does.
    let sigmas: [Float]
    let logSigmas: [Double]

    /// The table of `config`'s schedule; a zero terminal SNR makes the last sigma infinite and is refused.
    init(_ config: SchedulerConfig) throws {
        guard !config.rescaleBetasZeroSNR else { throw SchedulerError.infiniteSigma(config.className) }
        schedule = NoiseSchedule(config)
        sigmas = schedule.alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        logSigmas = sigmas.map { Double(Foundation.log($0)) }
    }

    /// Fractional timesteps and sigmas of `count` inference steps by the config's spacing, or with
    /// `use_karras_sigmas` Karras et al.'s sigmas between `minimum` and `maximum` (default: the
    /// spaced ones' ends) and the timesteps they map to.
    func inferenceLevels(_ config: SchedulerConfig, count: Int, minimum: Double? = nil,
                         maximum: Double? = nil) throws -> (times: [Double], sigmas: [Double]) {
        let times = try sigmaSamplerTimesteps(config, count: count)
        let levels = times.map { sigma(at: $0) }
        guard config.useKarrasSigmas else { return (times, levels) }
        let karras = Self.karras(minimum: minimum ?? levels.last!, maximum: maximum ?? levels.first!, count: count)
        return (karras.map { timestep(of: $0) }, karras)
    }

    /// sigma at fractional timesteps, linearly interpolated (numpy's `interp`).
    func sigma(at t: Double) -> Double {
        let i = Int(t.rounded(.down))
        if i < 0 { return Double(sigmas[0]) }
        if i >= sigmas.count - 1 { return Double(sigmas[sigmas.count - 1]) }
        let w = t - Double(i)
        return Double(sigmas[i]) * (1 - w) + Double(sigmas[i + 1]) * w
    }

    /// The fractional timestep of a sigma, by interpolating log sigma between its neighbours
    /// (diffusers' `_sigma_to_t`).
    func timestep(of sigma: Double) -> Double {
        let logSigma = Foundation.log(max(sigma, 1e-10))
        let below = logSigmas.lastIndex { $0 <= logSigma } ?? 0
        let low = min(below, logSigmas.count - 2), high = low + 1
        let w = min(max((logSigmas[low] - logSigma) / (logSigmas[low] - logSigmas[high]), 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }

    /// Karras et al.'s schedule (eq. 5, rho = 7): `count` sigmas from `maximum` down to `minimum`.
    static func karras(minimum: Double, maximum: Double, count: Int) -> [Double] {
        let rho = 7.0, lo = pow(minimum, 1 / rho), hi = pow(maximum, 1 / rho)
        return (0..<count).map { i in
            let ramp = count == 1 ? 0 : Double(i) / Double(count - 1)
            return pow(hi + ramp * (lo - hi), rho)
        }
    }

    /// The sigma after the last step.
    func finalSigma(_ type: SchedulerConfig.FinalSigmas) -> Double { type == .zero ? 0 : Double(sigmas[0]) }
}

/// Fractional inference timesteps of the sigma-based samplers (Euler, Euler ancestral, Heun), by
/// spacing: linspace(0, T - 1, n) reversed, leading k (T div n) + offset, trailing as DDIM's.
func sigmaSamplerTimesteps(_ config: SchedulerConfig, count n: Int) throws -> [Double] {
    let t = config.numTrainTimesteps
    guard n >= 1 && n <= t else { throw SchedulerError.stepCount(n, trainTimesteps: t) }
    switch config.timestepSpacing {
    case .linspace: return linspace(0, Double(t - 1), n).map { Double(Float($0)) }.reversed()
    case .leading: return (0..<n).reversed().map { Double($0 * (t / n) + config.stepsOffset) }
    case .trailing: return try inferenceTimesteps(config, count: n).map(Double.init)
    }
}

/// x_0 from the network's output at noise level sigma, for the sigma-scaled sample x.
func sigmaOriginal(_ output: Tensor, sample: Tensor, sigma: Float, type: SchedulerConfig.PredictionType) -> Tensor {
    switch type {
    case .epsilon: return linearCombination(1, sample, -sigma, output)
    case .vPrediction:
        return linearCombination(-sigma / (sigma * sigma + 1).squareRoot(), output, 1 / (sigma * sigma + 1), sample)
    case .sample: return output
    }
}

/// Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without churn), as
/// diffusers' `EulerDiscreteScheduler`: d = (x - x_0) / sigma, x' = x + d (sigma' - sigma).
/// `use_karras_sigmas` replaces the sigmas by Karras et al.'s and recovers fractional timesteps.
public struct EulerScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    let table: SigmaTable
    public private(set) var timesteps: [Float] = []
    /// The noise level at each call, then the final one.
    public private(set) var sigmas: [Float] = []

    public init(config: SchedulerConfig) throws {
        self.config = config
        table = try SigmaTable(config)
        schedule = table.schedule
        try setTimesteps(config.numTrainTimesteps)
    }

    public mutating func setTimesteps(_ count: Int) throws {
        let (times, levels) = try table.inferenceLevels(config, count: count, minimum: config.sigmaMin, maximum: config.sigmaMax)
        timesteps = times.map { Float($0) }
        sigmas = (levels + [table.finalSigma(config.finalSigmasType)]).map { Float($0) }
    }

    public var initNoiseSigma: Float { initialSigma(sigmas, spacing: config.timestepSpacing) }

    public func scaleModelInput(_ sample: Tensor, index: Int) -> Tensor { sample / (sigmas[index] * sigmas[index] + 1).squareRoot() }

    public func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor { linearCombination(1, original, sigmas[index], noise) }

    public func needsNoise(index: Int) -> Bool { false }

    public func step(_ output: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let sigma = sigmas[index], next = sigmas[index + 1]
        let x0 = sigmaOriginal(splitVariance(output, channels: sample.shape[1]).prediction, sample: sample, sigma: sigma, type: config.predictionType)
        let derivative = linearCombination(1 / sigma, sample, -1 / sigma, x0)
        return SchedulerStep(previousSample: linearCombination(1, sample, next - sigma, derivative), predictedOriginal: x0)
    }
}

/// The starting noise's standard deviation: the largest sigma (linspace, trailing), or
/// sqrt(sigma^2 + 1) of it (leading), as diffusers' sigma samplers have it.
func initialSigma(_ sigmas: [Float], spacing: SchedulerConfig.TimestepSpacing) -> Float {
    let top = sigmas.max() ?? 1
    return spacing == .leading ? (top * top + 1).squareRoot() : top
}

/// Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`, diffusers'
/// `EulerAncestralDiscreteScheduler`): an Euler step down to sigma_down, then fresh noise of
/// sigma_up, sigma_up^2 = sigma'^2 (sigma^2 - sigma'^2) / sigma^2, sigma_down^2 = sigma'^2 - sigma_up^2.
public struct EulerAncestralScheduler: Scheduler {
    var euler: EulerScheduler
    public var config: SchedulerConfig { euler.config }
    public var schedule: NoiseSchedule { euler.schedule }
    public var timesteps: [Float] { euler.timesteps }
    public var sigmas: [Float] { euler.sigmas }

    public init(config: SchedulerConfig) throws {
        var c = config
        c.useKarrasSigmas = false  // diffusers' class has no Karras option
        c.finalSigmasType = .zero
        euler = try EulerScheduler(config: c)
    }

    public mutating func setTimesteps(_ count: Int) throws { try euler.setTimesteps(count) }
    public var initNoiseSigma: Float { euler.initNoiseSigma }
    public func scaleModelInput(_ sample: Tensor, index: Int) -> Tensor { euler.scaleModelInput(sample, index: index) }
    public func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor { euler.addNoise(original, noise: noise, index: index) }

    func levels(_ index: Int) -> (up: Float, down: Float) {
        let from = sigmas[index], to = sigmas[index + 1]
        let up = (to * to * (from * from - to * to) / (from * from)).squareRoot()
        return (up, (to * to - up * up).squareRoot())
    }

    public func needsNoise(index: Int) -> Bool { levels(index).up > 0 }

    public func step(_ output: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let sigma = sigmas[index], (up, down) = levels(index)
        let x0 = sigmaOriginal(splitVariance(output, channels: sample.shape[1]).prediction, sample: sample, sigma: sigma, type: config.predictionType)
        let derivative = linearCombination(1 / sigma, sample, -1 / sigma, x0)
        var previous = linearCombination(1, sample, down - sigma, derivative)
        if up > 0 {
            guard let noise else { preconditionFailure("an Euler ancestral step with sigma_up \(up) needs noise") }
            previous = linearCombination(1, previous, up, noise)
        }
        return SchedulerStep(previousSample: previous, predictedOriginal: x0)
    }
}

/// Heun's second-order method (Karras et al. 2022, Algorithm 1), as diffusers'
/// `HeunDiscreteScheduler`: each step to a non-zero sigma takes an Euler step, calls the network
/// again at the new point and averages the two slopes; the last step, to sigma 0, is plain Euler.
/// So every interior sigma and timestep appears twice (2N - 1 calls for N steps).
public struct HeunScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    let table: SigmaTable
    public private(set) var timesteps: [Float] = []
    /// sigma at each call (interior ones twice), then 0.
    public private(set) var sigmas: [Float] = []
    /// Between the two calls of a step: the first slope, the step size and the sample it started from.
    var pending: (derivative: Tensor, dt: Float, sample: Tensor)? = nil

    public init(config: SchedulerConfig) throws {
        self.config = config
        table = try SigmaTable(config)
        schedule = table.schedule
        try setTimesteps(config.numTrainTimesteps)
    }

    public mutating func setTimesteps(_ count: Int) throws {
        let (times, levels) = try table.inferenceLevels(config, count: count)  // diffusers' Heun has no sigma_min/max
        timesteps = ([times[0]] + times.dropFirst().flatMap { [$0, $0] }).map { Float($0) }
        sigmas = ([levels[0]] + levels.dropFirst().flatMap { [$0, $0] } + [0]).map { Float($0) }
        pending = nil
    }

    public var initNoiseSigma: Float { initialSigma(sigmas, spacing: config.timestepSpacing) }

    public var order: Int { 2 }

    public func scaleModelInput(_ sample: Tensor, index: Int) -> Tensor { sample / (sigmas[index] * sigmas[index] + 1).squareRoot() }

    public func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor { linearCombination(1, original, sigmas[index], noise) }

    public func needsNoise(index: Int) -> Bool { false }

    public mutating func step(_ output: Tensor, index: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let firstOrder = index % 2 == 0
        let sigma = firstOrder ? sigmas[index] : sigmas[index - 1], next = firstOrder ? sigmas[index + 1] : sigmas[index]
        var x0 = sigmaOriginal(splitVariance(output, channels: sample.shape[1]).prediction, sample: sample,
                               sigma: firstOrder ? sigma : next, type: config.predictionType)
        if config.clipSample { x0 = clamped(x0, Float(config.clipSampleRange)) }
        if firstOrder {
            let derivative = linearCombination(1 / sigma, sample, -1 / sigma, x0)
            pending = (derivative, next - sigma, sample)
            return SchedulerStep(previousSample: linearCombination(1, sample, next - sigma, derivative), predictedOriginal: x0)
        }
        guard let (first, dt, start) = pending else { preconditionFailure("Heun's second call without its first") }
        pending = nil
        let second = linearCombination(1 / next, sample, -1 / next, x0)
        let slope = linearCombination(0.5, first, 0.5, second)
        return SchedulerStep(previousSample: linearCombination(1, start, dt, slope), predictedOriginal: x0)
    }
}
