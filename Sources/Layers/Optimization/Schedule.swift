import Foundation
import Tensors

/// The learning rate after `step` completed updates: linear warmup from 0 over `warmup` steps,
/// then constant (diffusers' `get_constant_schedule_with_warmup`, and the original DDPM's).
public func warmupLearningRate(base: Float, step: Int, warmup: Int) -> Float {
    warmup <= 0 ? base : base * min(1, Float(step) / Float(warmup))
}

/// Scales all gradients so that their joint L2 norm is at most `maxNorm` (PyTorch's
/// `clip_grad_norm_`: factor maxNorm / (norm + 1e-6) when below 1). Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Tensor], maxNorm: Float) -> Float {
    var total = 0.0
    for p in parameters {
        guard let g = p.gradient else { continue }
        var s = 0.0
        for i in 0..<g.count { s += Double(g.pointer[i] * g.pointer[i]) }
        total += s
    }
    let norm = Float(total.squareRoot())
    let factor = maxNorm / (norm + 1e-6)
    if factor < 1 {
        for p in parameters {
            guard let g = p.gradient else { continue }
            for i in 0..<g.count { g.pointer[i] *= factor }
        }
    }
    return norm
}
