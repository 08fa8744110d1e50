/// Multi-head scaled dot-product attention. query, key, value [B, L, H d] with the heads side by
/// side in the last dimension, as linear layers produce them; the result has the same layout.
public func scaledDotProductAttention(query: Tensor, key: Tensor, value: Tensor, heads: Int) -> Tensor {
    require(query.rank == 3 && query.shape == key.shape && key.shape == value.shape,
            "attention: query \(query.shape), key \(key.shape), value \(value.shape) must be equal [B, L, H d]")
    require(query.shape[2] % heads == 0, "attention: width \(query.shape[2]) does not split into \(heads) heads")
    let g = AttentionGeometry(batch: query.shape[0], length: query.shape[1], heads: heads,
                              headDim: query.shape[2] / heads)
    let out = Storage(uninitializedCount: query.count)
    // what the backward pass needs (probabilities, or small heads' log-sum-exps) is kept only when there is one
    let recording = GradientRecording.isOn && [query, key, value].contains { $0.node != nil }
    let saved = Storage(uninitializedCount: recording ? g.savedCount : 0)
    Profiler.measure("attention", flops: g.flops) {
        attentionForward(g, q: query.pointer, k: key.pointer, v: value.pointer, out: out.pointer,
                         saved: recording ? saved.pointer : nil)
    }
    let nq = query.node, nk = key.node, nv = value.node
    let q = query.storage, k = key.storage, v = value.storage
    return Tensor.result(query.shape, out, inputs: [query, key, value], op: "attention", backwardFlops: 2 * g.flops) { grad in
        // unused sinks still need somewhere to write; they are dropped afterwards
        let dq = nq?.gradientStorage() ?? Storage(zeros: q.count)
        let dk = nk?.gradientStorage() ?? Storage(zeros: k.count)
        let dv = nv?.gradientStorage() ?? Storage(zeros: v.count)
        attentionBackward(g, q: q.pointer, k: k.pointer, v: v.pointer, saved: saved.pointer,
                          dout: grad.pointer, dq: dq.pointer, dk: dk.pointer, dv: dv.pointer)
    }
}

/// Self-attention over the pixels of feature maps, for gradient-free passes (sampling), with no
/// layout copies: residual + to_out(attention(q, k, v)) in NCHW, where q, k, v come from one
/// product of the normalised maps x [N, C, H, W] read as [C, HW] per image with the stacked
/// weights `qkvWeight` [3C, C] (to_q, to_k, to_v) and `qkvBias` [3C] into [N, HW, 3C], attention
/// reads its thirds in place, and to_out (`outWeight` [C, C], `outBias` [C]) writes [C, HW] per
/// image onto the residual. The recorded path (linear layers, `scaledDotProductAttention`,
/// transposes) computes the same; this one keeps no state for a backward pass and refuses to run
/// while gradients are recorded.
public func pixelAttention(_ x: Tensor, qkvWeight: UnsafePointer<Float>, qkvBias: UnsafePointer<Float>?,
                           outWeight: Tensor, outBias: Tensor?, heads: Int, residual: Tensor) -> Tensor {
    require(!GradientRecording.isOn || ([x, outWeight, residual] + (outBias.map { [$0] } ?? [])).allSatisfy { $0.node == nil },
            "pixelAttention keeps nothing for a backward pass: call it without gradients")
    require(x.rank == 4 && residual.shape == x.shape, "pixelAttention: x \(x.shape), residual \(residual.shape)")
    let (n, c, l) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    require(outWeight.shape == [c, c] && c % heads == 0, "pixelAttention: to_out \(outWeight.shape) for \(c) channels, \(heads) heads")
    let g = AttentionGeometry(batch: n, length: l, heads: heads, headDim: c / heads, tokenStride: 3 * c)
    let qkv = Storage(uninitializedCount: n * l * 3 * c), attended = Storage(uninitializedCount: n * l * c)
    let out = Storage(uninitializedCount: x.count)
    let px = SharedPointer(x.pointer), pqkv = SharedPointer(qkv.pointer), pa = SharedPointer(attended.pointer)
    let po = SharedPointer(out.pointer), pr = SharedPointer(residual.pointer)
    let pw = SharedPointer(qkvWeight), pb = qkvBias.map { SharedPointer($0) }
    let pow = SharedPointer(outWeight.pointer), pob = outBias.map { SharedPointer($0.pointer) }
    // images across cores, each product on one; fewer images than cores split their products instead
    let split = n < kernelThreads
    func perImage(_ body: @escaping @Sendable (Int) -> Void) {
        if split { for i in 0..<n { body(i) } } else { parallelFor(n, cost: 1 << 20) { images in for i in images { body(i) } } }
    }
    Profiler.measure("linear", flops: 2 * Double(n * l * c * 3 * c)) {
        perImage { i in
            let rows = pqkv + i * l * 3 * c
            if let pb { for t in 0..<l { (rows + t * 3 * c).update(from: pb.base, count: 3 * c) } }
            // qkv_i [L, 3C] = x_i^T [L, C] W^T
            product(split: split, transposeA: true, transposeB: true, m: l, n: 3 * c, k: c, a: px + i * c * l, lda: l,
                    b: pw.base, ldb: c, beta: pb == nil ? 0 : 1, c: rows, ldc: 3 * c)
        }
    }
    Profiler.measure("attention", flops: g.flops) {
        attentionForward(g, q: qkv.pointer, k: qkv.pointer + c, v: qkv.pointer + 2 * c, out: attended.pointer, saved: nil)
    }
    Profiler.measure("linear", flops: 2 * Double(n * l * c * c)) {
        perImage { i in
            let y = po + i * c * l, r = pr + i * c * l
            for k in 0..<c {
                let bias = pob?[k] ?? 0
                for t in 0..<l { y[k * l + t] = r[k * l + t] + bias }
            }
            // y_i [C, L] += W_out [C, C] attended_i^T
            product(split: split, transposeB: true, m: c, n: l, k: c, a: pow.base, lda: c, b: pa + i * l * c, ldb: c,
                    beta: 1, c: y, ldc: l)
        }
    }
    return Tensor(shape: x.shape, storage: out)
}

/// `parallelGemm` when `split`, else `gemm` on the calling thread.
private func product(split: Bool, transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    let f = split ? parallelGemm : gemm
    f(transposeA, transposeB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

/// Whether ops are recording a graph for a backward pass (false inside `withoutGradients`).
public var isRecordingGradients: Bool { GradientRecording.isOn }
