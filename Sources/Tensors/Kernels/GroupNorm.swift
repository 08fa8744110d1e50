/// Group normalisation (Wu & He 2018): x [N, C, S] (S = H W) in G groups of C/G channels;
/// y = (x - mean) * rstd * gamma[c] + beta[c], statistics per (n, g) accumulated in Double.
/// The forward pass saves mean and rstd [N G] for the backward pass, as llm.c's layernorm does.
/// With `silu` the activation is fused in (GroupNorm is almost always followed by SiLU in a U-Net):
/// y = silu(normalised), and the backward pass recomputes the pre-activation from x and the saved
/// statistics instead of storing it.

public struct GroupNormGeometry: Sendable {
    public var batch, channels, spatial, groups: Int
    public var epsilon: Float
    public init(batch: Int, channels: Int, spatial: Int, groups: Int, epsilon: Float) {
        require(channels % groups == 0, "GroupNorm: \(channels) channels do not split into \(groups) groups")
        self.batch = batch; self.channels = channels; self.spatial = spatial
        self.groups = groups; self.epsilon = epsilon
    }
    var groupSize: Int { channels / groups * spatial }
}

public func groupNormForward(_ g: GroupNormGeometry, x: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                             beta: UnsafePointer<Float>, silu: Bool, y: UnsafeMutablePointer<Float>,
                             mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                             kernels: KernelSet = .active) {
    let px = SharedPointer(x), py = SharedPointer(y), pm = SharedPointer(mean), pr = SharedPointer(rstd)
    let pgam = SharedPointer(gamma), pbet = SharedPointer(beta)
    let cpg = g.channels / g.groups, size = g.groupSize
    parallelFor(g.batch * g.groups, cost: size) { range in
        for ng in range {
            let base = px + ng * size
            // two passes (mean, then squared deviations): no cancellation when |mean| >> std
            var s = 0.0
            for c in 0..<cpg { s += Double(kernels.k.sum(base + c * g.spatial, g.spatial)) }
            let m = s / Double(size), mf = Float(m)
            var s2 = 0.0
            for c in 0..<cpg { s2 += Double(kernels.k.sum_squared_deviations(base + c * g.spatial, mf, g.spatial)) }
            let r = 1 / (s2 / Double(size) + Double(g.epsilon)).squareRoot()
            pm[ng] = Float(m); pr[ng] = Float(r)
            let channel0 = ng % g.groups * cpg
            for c in 0..<cpg {
                let scale = Float(r) * pgam[channel0 + c]
                let shift = pbet[channel0 + c] - Float(m) * scale
                let src = base + c * g.spatial, dst = py + ng * size + c * g.spatial
                if silu {
                    kernels.k.silu_affine(src, scale, shift, dst, g.spatial)
                } else {
                    for i in 0..<g.spatial { dst[i] = src[i] * scale + shift }
                }
            }
        }
    }
}

/// Adds dL/dx (or writes it, `accumulateDx` false), dL/dgamma and dL/dbeta. With
/// xhat = (x - mean) rstd and dxhat = dy gamma:
/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) over the group.
public func groupNormBackward(_ g: GroupNormGeometry, x: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                              beta: UnsafePointer<Float>, silu: Bool, dy: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                              dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                              dbeta: UnsafeMutablePointer<Float>?, accumulateDx: Bool = true,
                              kernels: KernelSet = .active) {
    let cpg = g.channels / g.groups, size = g.groupSize
    // per (n, c) sums of dy' and dy' xhat, where dy' is the gradient before the affine transform
    let partial = Storage(uninitializedCount: 2 * g.batch * g.channels)
    let px = SharedPointer(x), pdy = SharedPointer(dy), pm = SharedPointer(mean), pr = SharedPointer(rstd)
    let pgam = SharedPointer(gamma), pbet = SharedPointer(beta), pp = SharedPointer(partial.pointer)
    let pdx = dx.map { SharedPointer($0) }
    let nc = g.batch * g.channels
    parallelFor(g.batch * g.groups, cost: 2 * size) { range in
        // the gradient before the affine transform, d = dy silu', kept for the second pass (d = dy without SiLU)
        let d = UnsafeMutablePointer<Float>.allocate(capacity: silu ? size : 0)
        defer { d.deallocate() }
        for ng in range {
            let m = pm[ng], r = pr[ng]
            let channel0 = ng % g.groups * cpg, n = ng / g.groups
            let dGroup = silu ? d : pdy + ng * size  // this group's d, channel c at c spatial
            var sumD = 0.0, sumDX = 0.0
            for c in 0..<cpg {
                let ch = channel0 + c, gam = pgam[ch], bet = pbet[ch]
                let xs = px + ng * size + c * g.spatial, gs = pdy + ng * size + c * g.spatial
                let dc = dGroup + c * g.spatial
                if silu {  // the pre-activation again: v = (x - m) r gam + bet
                    kernels.k.silu_affine_backward(xs, r * gam, bet - m * r * gam, gs, dc, g.spatial, 0)
                }
                // sum d and sum d xhat, with xhat = (x - m) r
                let a = kernels.k.sum(dc, g.spatial)
                let b = r * (kernels.k.dot(dc, xs, g.spatial) - m * a)
                pp[n * g.channels + ch] = a
                pp[nc + n * g.channels + ch] = b
                sumD += Double(a * gam); sumDX += Double(b * gam)
            }
            guard let pdx else { continue }
            let meanD = Float(sumD / Double(size)), meanDX = Float(sumDX / Double(size))
            for c in 0..<cpg {  // dx = r gam d - r^2 meanDX (x - m) - r meanD
                let offset = ng * size + c * g.spatial
                kernels.k.norm_backward_dx(dGroup + c * g.spatial, px + offset, r * pgam[channel0 + c], -r * r * meanDX,
                                           m, -r * meanD, pdx + offset, g.spatial, accumulateDx ? 1 : 0)
            }
        }
    }
    for n in 0..<g.batch {
        for c in 0..<g.channels {
            dbeta?[c] += pp[n * g.channels + c]
            dgamma?[c] += pp[nc + n * g.channels + c]
        }
    }
}
