/// Activations and their gradients: SiLU, softmax, dropout.

extension Tensor {
    /// x * sigmoid(x) (the swish of Ramachandran et al.; the U-Net's only nonlinearity).
    public func silu() -> Tensor {
        let out = Storage(uninitializedCount: count)
        Profiler.measure("silu") { siluForward(pointer, out.pointer, count: count) }
        let n = node, x = storage
        return Tensor.result(shape, out, inputs: [self], op: "silu") { g in
            siluBackward(x.pointer, g.pointer, n!.gradientStorage().pointer, count: g.count)
        }
    }

    /// Softmax over the last dimension.
    public func softmax() -> Tensor {
        let n = shape.last ?? 1
        let out = storage.copy()
        Profiler.measure("softmax") { softmaxRows(out.pointer, rows: count / n, n: n) }
        let node = node
        return Tensor.result(shape, out, inputs: [self], op: "softmax") { g in
            softmaxRowsBackward(out.pointer, g.pointer, node!.gradientStorage().pointer, rows: g.count / n, n: n)
        }
    }

    /// Inverted dropout: zeroes each element with probability p and scales survivors by 1/(1-p).
    /// The identity when p is 0. One word of `rng` keys the whole mask (see `dropoutForward`).
    public func dropout(_ p: Float, using rng: inout RandomGenerator) -> Tensor {
        require(p >= 0 && p < 1, "dropout probability \(p) is outside [0, 1)")
        if p == 0 { return self }
        let key = rng.next()
        let out = Storage(uninitializedCount: count)
        Profiler.measure("dropout") { dropoutForward(pointer, p: p, key: key, out.pointer, count: count) }
        let n = node
        return Tensor.result(shape, out, inputs: [self], op: "dropout") { g in
            dropoutBackward(g.pointer, p: p, key: key, n!.gradientStorage().pointer, count: g.count)
        }
    }
}
