import Foundation

/// The variance schedule of the forward process: beta_t, alpha_t = 1 - beta_t and
/// abar_t = prod_{s <= t} alpha_s, computed once from a scheduler config and never again
/// (schedulers and training take this value; none recomputes betas).
/// Values are float32, as diffusers holds them; betas are computed in Double and rounded.
public struct NoiseSchedule: Sendable, Equatable {
    public let betas: [Float]
    public let alphas: [Float]
    public let alphasCumprod: [Float]

    public var count: Int { betas.count }

    public init(_ config: SchedulerConfig) {
        let t = config.numTrainTimesteps
        var betas: [Float]
        if let trained = config.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case .linear:
                betas = linspace(config.betaStart, config.betaEnd, t).map { Float($0) }
            case .scaledLinear:
                betas = linspace(config.betaStart.squareRoot(), config.betaEnd.squareRoot(), t).map { Float($0 * $0) }
            case .cosine:
                // Nichol & Dhariwal 2021, eq. 17: beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999)
                func f(_ x: Double) -> Double { let c = cos((x + 0.008) / 1.008 * Double.pi / 2); return c * c }
                betas = (0..<t).map { i in Float(min(1 - f(Double(i + 1) / Double(t)) / f(Double(i) / Double(t)), 0.999)) }
            }
        }
        if config.rescaleBetasZeroSNR { betas = rescaledToZeroTerminalSNR(betas) }
        self.init(betas: betas)
    }

    public init(betas: [Float]) {
        self.betas = betas
        alphas = betas.map { 1 - $0 }
        var product: Float = 1
        alphasCumprod = alphas.map { product *= $0; return product }
    }

    /// Signal-to-noise ratio abar / (1 - abar) at step t.
    public func snr(_ t: Int) -> Float { alphasCumprod[t] / (1 - alphasCumprod[t]) }
}

/// numpy/torch linspace: n values from a to b inclusive.
func linspace(_ a: Double, _ b: Double, _ n: Int) -> [Double] {
    n == 1 ? [a] : (0..<n).map { a + (b - a) * Double($0) / Double(n - 1) }
}

/// Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
/// shift and scale sqrt(abar) so that it ends at exactly 0 and keeps its first value.
func rescaledToZeroTerminalSNR(_ betas: [Float]) -> [Float] {
    var product: Float = 1
    var root = betas.map { b -> Float in product *= 1 - b; return product.squareRoot() }
    let first = root[0], last = root[root.count - 1]
    for i in root.indices { root[i] = (root[i] - last) * (first / (first - last)) }
    let abar = root.map { $0 * $0 }
    return abar.indices.map { i in 1 - (i == 0 ? abar[0] : abar[i] / abar[i - 1]) }
}
