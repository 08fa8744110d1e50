import Foundation
import Tensors

/// DPM-Solver++ (Lu et al. 2022), multistep, orders 1 and 2, as diffusers'
/// `DPMSolverMultistepScheduler` with `algorithm_type "dpmsolver++"`. In the data-prediction form:
/// with alpha = 1 / sqrt(sigma^2 + 1), s = sigma alpha, lambda = log alpha - log s, h = lambda_t - lambda_s
/// and m = the model's x_0,
///   first order  x_t = (s_t / s_s) x - alpha_t (e^-h - 1) m_0
///   second order x_t = (s_t / s_s0) x - alpha_t (e^-h - 1) D0 - 1/2 alpha_t (e^-h - 1) D1   (midpoint)
///                 or ... + alpha_t ((e^-h - 1) / h + 1) D1                                      (heun)
///   with D0 = m_0, D1 = (m_0 - m_1) / r0, r0 = (lambda_s0 - lambda_s1) / h.
/// The first step has no history and is first order; so is the last with `final_sigmas_type`
/// zero, `euler_at_final`, or `lower_order_final` under 15 steps.
public struct DPMSolverScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    let table: SigmaTable
    public private(set) var timesteps: [Float] = []
    /// sigma at each step, then the final one.
    public private(set) var sigmas: [Float] = []
    /// The model's x_0 at the previous step, and how many steps have run (for the order ramp).
    var previousOriginal: Tensor? = nil
    var stepsTaken = 0

    public init(config: SchedulerConfig) throws {
        self.config = config
        table = try SigmaTable(config)
        schedule = table.schedule
        try setTimesteps(min(config.numTrainTimesteps, 25))
    }

    public mutating func setTimesteps(_ n: Int) throws {
        let t = config.numTrainTimesteps
        guard n >= 1 && n <= t else { throw SchedulerError.stepCount(n, trainTimesteps: t) }
        // lambda_min_clipped drops the noisiest timesteps whose log-SNR lies below it
        let lambdas = table.sigmas.map { sigma -> Double in
            let alpha = 1 / (Double(sigma) * Double(sigma) + 1).squareRoot()
            return Foundation.log(alpha) - Foundation.log(Double(sigma) * alpha)
        }
        let last = t - lambdas.filter { $0 < config.lambdaMinClipped }.count
        var times: [Double]
        switch config.timestepSpacing {
        case .linspace: times = Array(linspace(0, Double(last - 1), n + 1).map { $0.rounded(.toNearestOrEven) }.reversed().dropLast())
        case .leading:
            let ratio = last / (n + 1)
            times = (1...n).reversed().map { Double($0 * ratio + config.stepsOffset) }
        case .trailing:
            let ratio = Double(t) / Double(n)
            times = stride(from: Double(last), to: 0, by: -ratio).map { $0.rounded(.toNearestOrEven) - 1 }
        }
        var levels = times.map { table.sigma(at: $0) }
        if config.useKarrasSigmas {
            levels = SigmaTable.karras(minimum: Double(table.sigmas.first!), maximum: Double(table.sigmas.last!), count: n)
            times = levels.map { table.timestep(of: $0) }
            // rounded (except on the cosine schedule, as diffusers has it), then whole, as diffusers' int64 timesteps are
            times = times.map { (config.betaSchedule == .cosine ? $0 : $0.rounded(.toNearestOrEven)).rounded(.towardZero) }
        }
        timesteps = times.map { Float($0) }
        sigmas = (levels + [table.finalSigma(config.finalSigmasType)]).map { Float($0) }
        previousOriginal = nil
        stepsTaken = 0
    }

    public func needsNoise(index: Int) -> Bool { false }

    public func addNoise(_ original: Tensor, noise: Tensor, index: Int) -> Tensor {
        let (alpha, sigma, _) = coefficients(index)
        return linearCombination(Float(alpha), original, Float(sigma), noise)
    }

    /// alpha, s and lambda at the i-th sigma.
    func coefficients(_ i: Int) -> (alpha: Double, sigma: Double, lambda: Double) {
        let sigma = Double(sigmas[i]), alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha, Foundation.log(alpha) - Foundation.log(sigma * alpha))
    }

    /// The model's x_0 (dynamically thresholded when configured).
    func dataPrediction(_ output: Tensor, index: Int, sample: Tensor) -> Tensor {
        let (alpha, sigma, _) = coefficients(index)
        let x0: Tensor
        switch config.predictionType {
        case .epsilon: x0 = linearCombination(Float(1 / alpha), sample, Float(-sigma / alpha), output)
        case .sample: x0 = output
        case .vPrediction: x0 = linearCombination(Float(alpha), sample, Float(-sigma), output)
        }
        return config.thresholding ? dynamicThreshold(x0, ratio: Float(config.dynamicThresholdingRatio), maxValue: Float(config.sampleMaxValue)) : x0
    }

    public mutating func step(_ output: Tensor, index i: Int, sample: Tensor, noise: Tensor?) -> SchedulerStep {
        let n = timesteps.count
        let lowerOrderFinal = i == n - 1 && (config.eulerAtFinal || (config.lowerOrderFinal && n < 15) || config.finalSigmasType == .zero)
        let m0 = dataPrediction(splitVariance(output, channels: sample.shape[1]).prediction, index: i, sample: sample)
        let (alphaT, sigmaT, lambdaT) = coefficients(i + 1), (_, sigmaS0, lambdaS0) = coefficients(i)
        let h = lambdaT - lambdaS0, decay = Foundation.exp(-h) - 1
        let previous: Tensor
        if config.solverOrder == 1 || stepsTaken < 1 || lowerOrderFinal {
            previous = linearCombination(Float(sigmaT / sigmaS0), sample, Float(-alphaT * decay), m0)
        } else {
            let m1 = previousOriginal!
            let r0 = (lambdaS0 - coefficients(i - 1).lambda) / h
            let d1 = linearCombination(Float(1 / r0), m0, Float(-1 / r0), m1)
            let d1Coefficient = config.solverType == .midpoint ? -0.5 * alphaT * decay : alphaT * (decay / h + 1)
            previous = linearCombination(1, linearCombination(Float(sigmaT / sigmaS0), sample, Float(-alphaT * decay), m0),
                                         Float(d1Coefficient), d1)
        }
        previousOriginal = m0
        stepsTaken += 1
        return SchedulerStep(previousSample: previous, predictedOriginal: m0)
    }
}
