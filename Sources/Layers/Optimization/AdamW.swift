import Tensors

/// Adam with decoupled weight decay (Loshchilov & Hutter 2019), as PyTorch's `AdamW` computes it:
/// p -= lr wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
public final class AdamW {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    /// Updates taken so far (t in the bias corrections).
    public private(set) var step = 0
    public let parameters: [Tensor]
    /// A factor on the learning rate per parameter (1 unless a caller sets a parameter group's).
    public var learningRateScales: [Float]
    private var moments: [(m: Storage, v: Storage)]

    public init(parameters: [Tensor], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, weightDecay: Float = 1e-2) {
        require(parameters.allSatisfy(\.requiresGradient), "AdamW: every parameter must be trainable")
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
        moments = parameters.map { (Storage(zeros: $0.count), Storage(zeros: $0.count)) }
        learningRateScales = Array(repeating: 1, count: parameters.count)
    }

    /// One update from the parameters' accumulated gradients (parameters without one are skipped).
    public func update() {
        step += 1
        let t = Float(step)
        let correction1 = 1 - pow(beta1, t)
        let correction2 = (1 - pow(beta2, t)).squareRoot()
        for ((p, (m, v)), scale) in zip(zip(parameters, moments), learningRateScales) {
            guard let g = p.gradient else { continue }
            let lr = learningRate * scale
            let coefficients = AdamWCoefficients(beta1: beta1, beta2: beta2, decay: 1 - lr * weightDecay,
                                                 stepSize: lr / correction1, correction2: correction2, epsilon: epsilon)
            adamWStep(p.pointer, gradient: g.pointer, m: m.pointer, v: v.pointer, count: p.count, coefficients)
        }
    }

    /// The optimiser's state for a checkpoint: moments by parameter index, and the step.
    public var state: (step: Int, moments: [Tensor]) {
        (step, moments.flatMap { [Tensor(shape: [$0.m.count], storage: $0.m), Tensor(shape: [$0.v.count], storage: $0.v)] })
    }

    public func restore(step: Int, moments saved: [Tensor]) {
        require(saved.count == 2 * moments.count, "AdamW: \(saved.count) moment tensors for \(moments.count) parameters")
        self.step = step
        for (i, (m, v)) in moments.enumerated() {
            m.pointer.update(from: saved[2 * i].pointer, count: m.count)
            v.pointer.update(from: saved[2 * i + 1].pointer, count: v.count)
        }
    }
}

import Foundation
