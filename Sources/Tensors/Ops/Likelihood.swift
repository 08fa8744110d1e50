import Foundation

/// Gaussian likelihood terms with gradients in the log variance only (the mean is held fixed),
/// for training a learned variance by the variational bound (Nichol & Dhariwal 2021).
extension Tensor {
    /// KL(N(mean1, e^logVariance1) || N(mean2, e^self)) elementwise, in nats; self is the second
    /// Gaussian's log variance. The other arguments are constants of the same shape.
    public func gaussianKL(mean1: Tensor, logVariance1: Tensor, mean2: Tensor) -> Tensor {
        require(mean1.shape == shape && logVariance1.shape == shape && mean2.shape == shape, "gaussianKL shapes")
        let out = Storage(uninitializedCount: count)
        let (m1, lv1, m2, lv2) = (mean1.pointer, logVariance1.pointer, mean2.pointer, pointer)
        for i in 0..<count {
            let d = Double(m1[i] - m2[i])
            out.pointer[i] = Float(0.5 * (-1 + Double(lv2[i] - lv1[i]) + exp(Double(lv1[i] - lv2[i])) + d * d * exp(-Double(lv2[i]))))
        }
        let n = node, keep = (mean1.storage, logVariance1.storage, mean2.storage, storage)
        return Tensor.result(shape, out, inputs: [self], op: "gaussianKL") { g in
            let sink = n!.gradientStorage().pointer
            let (m1, lv1, m2, lv2) = (keep.0.pointer, keep.1.pointer, keep.2.pointer, keep.3.pointer)
            for i in 0..<g.count {
                let d = Double(m1[i] - m2[i])
                let derivative = 0.5 * (1 - exp(Double(lv1[i] - lv2[i])) - d * d * exp(-Double(lv2[i])))
                sink[i] += g.pointer[i] * Float(derivative)
            }
        }
    }

    /// -log P(x) elementwise for x on the 256-bin grid of [-1, 1] under N(mean, e^self) discretised,
    /// the outer bins open (`discretizedGaussianLogLikelihood` in Diffusion has the formula); self is
    /// the log variance, `x` and `mean` constants. The gradient is taken with respect to self.
    public func discretizedGaussianNLL(x: Tensor, mean: Tensor) -> Tensor {
        require(x.shape == shape && mean.shape == shape, "discretizedGaussianNLL shapes")
        let out = Storage(uninitializedCount: count)
        for i in 0..<count {
            out.pointer[i] = Float(-discretizedLogLikelihood(Double(x.pointer[i]), mean: Double(mean.pointer[i]),
                                                            logScale: 0.5 * Double(pointer[i])).value)
        }
        let n = node, keep = (x.storage, mean.storage, storage)
        return Tensor.result(shape, out, inputs: [self], op: "discretizedGaussianNLL") { g in
            let sink = n!.gradientStorage().pointer
            for i in 0..<g.count {
                let r = discretizedLogLikelihood(Double(keep.0.pointer[i]), mean: Double(keep.1.pointer[i]),
                                                 logScale: 0.5 * Double(keep.2.pointer[i]))
                sink[i] -= g.pointer[i] * Float(0.5 * r.dLogScale)  // d/d logVariance = d/d logScale / 2
            }
        }
    }
}

/// log P(x) for x one of 256 bins of width 2/255 over [-1, 1] under N(mean, e^(2 logScale)), the
/// outermost bins open to -infinity and +infinity, the normal CDF by the tanh approximation of
/// improved-diffusion (so figures compare), probabilities clamped at 1e-12; and its derivative
/// with respect to logScale (0 where the clamp holds).
public func discretizedLogLikelihood(_ x: Double, mean: Double, logScale: Double) -> (value: Double, dLogScale: Double) {
    let k = (2 / Double.pi).squareRoot()
    func cdf(_ z: Double) -> (value: Double, density: Double) {
        let u = k * (z + 0.044715 * z * z * z), th = tanh(u)
        return (0.5 * (1 + th), 0.5 * (1 - th * th) * k * (1 + 3 * 0.044715 * z * z))
    }
    let inverse = exp(-logScale), centred = x - mean
    let zPlus = inverse * (centred + 1 / 255), zMinus = inverse * (centred - 1 / 255)
    let plus = cdf(zPlus), minus = cdf(zMinus)
    // dz/dlogScale = -z
    let (p, dp): (Double, Double)
    if x < -0.999 {
        (p, dp) = (plus.value, -plus.density * zPlus)
    } else if x > 0.999 {
        (p, dp) = (1 - minus.value, minus.density * zMinus)
    } else {
        (p, dp) = (plus.value - minus.value, -plus.density * zPlus + minus.density * zMinus)
    }
    return p > 1e-12 ? (log(p), dp / p) : (log(1e-12), 0)
}
