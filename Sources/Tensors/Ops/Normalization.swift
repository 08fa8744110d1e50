extension Tensor {
    /// Group normalisation of x [N, C, ...] with per-channel affine gamma, beta [C]; with
    /// `silu`, followed by SiLU in the same pass.
    public func groupNorm(groups: Int, gamma: Tensor, beta: Tensor, epsilon: Float, silu: Bool = false) -> Tensor {
        let g = GroupNormGeometry(batch: shape[0], channels: shape[1], spatial: count / (shape[0] * shape[1]),
                                  groups: groups, epsilon: epsilon)
        require(gamma.count == g.channels && beta.count == g.channels,
                "groupNorm: gamma \(gamma.shape) / beta \(beta.shape) for \(g.channels) channels")
        let out = Storage(uninitializedCount: count)
        let stats = Storage(uninitializedCount: 2 * g.batch * groups)
        let mean = stats.pointer, rstd = stats.pointer + g.batch * groups
        let op = silu ? "groupnorm+silu" : "groupnorm"
        Profiler.measure(op) {
            groupNormForward(g, x: pointer, gamma: gamma.pointer, beta: beta.pointer, silu: silu,
                             y: out.pointer, mean: mean, rstd: rstd)
        }
        let nx = node, ng = gamma.node, nb = beta.node
        let x = storage, gam = gamma.storage, bet = beta.storage
        return Tensor.result(shape, out, inputs: [self, gamma, beta], op: op) { grad in
            let dx = nx?.gradientForWriting()
            groupNormBackward(g, x: x.pointer, gamma: gam.pointer, beta: bet.pointer, silu: silu,
                              dy: grad.pointer, mean: stats.pointer, rstd: stats.pointer + g.batch * groups,
                              dx: dx?.storage.pointer, dgamma: ng?.gradientStorage().pointer,
                              dbeta: nb?.gradientStorage().pointer, accumulateDx: dx?.accumulate ?? true)
        }
    }
}
