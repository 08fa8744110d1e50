import Tensors

/// An exponential moving average of parameters, the weights DDPM samples with (Ho et al. use
/// decay 0.9999). shadow -= (1 - decay) (shadow - parameter) after each update.
public final class ExponentialMovingAverage {
    public enum Decay: Sendable, Equatable {
        /// A fixed decay.
        case constant(Float)
        /// diffusers' training example: min(maxDecay, 1 - (1 + step / invGamma)^-power), 0 before step 1.
        case warmup(maxDecay: Float, invGamma: Float = 1, power: Float = 0.75)

        public func value(afterStep step: Int) -> Float {
            switch self {
            case .constant(let d): return d
            case let .warmup(maxDecay, invGamma, power):
                let s = Float(step - 1)
                if s <= 0 { return 0 }
                return min(maxDecay, 1 - pow(1 + s / invGamma, -power))
            }
        }
    }

    public let decay: Decay
    /// The averaged copies, in the order of the parameters given.
    public let shadow: [Tensor]
    private let parameters: [Tensor]

    public init(parameters: [Tensor], decay: Decay) {
        self.parameters = parameters
        self.decay = decay
        shadow = parameters.map { $0.copy() }
    }

    /// Moves the average toward the current parameters; `step` counts updates taken (1 after the first).
    public func update(step: Int) {
        let d = decay.value(afterStep: step)
        for (s, p) in zip(shadow, parameters) {
            let ps = SharedPointer(s.pointer), pp = SharedPointer(p.pointer)
            parallelFor(s.count) { range in for i in range { ps[i] -= (1 - d) * (ps[i] - pp[i]) } }
        }
    }
}

import Foundation
