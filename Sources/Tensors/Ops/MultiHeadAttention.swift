/// Multi-head scaled dot-product attention. query, key, value [B, L, H d] with the heads side by
/// side in the last dimension, as linear layers produce them; the result has the same layout.
public func scaledDotProductAttention(query: Tensor, key: Tensor, value: Tensor, heads: Int) -> Tensor {
    precondition(query.rank == 3 && query.shape == key.shape && key.shape == value.shape,
                 "attention: query \(query.shape), key \(key.shape), value \(value.shape) must be equal [B, L, H d]")
    precondition(query.shape[2] % heads == 0, "attention: width \(query.shape[2]) does not split into \(heads) heads")
    let g = AttentionGeometry(batch: query.shape[0], length: query.shape[1], heads: heads,
                              headDim: query.shape[2] / heads)
    let out = Storage(uninitializedCount: query.count)
    // the probabilities [B, H, L, L] are kept only when a backward pass will need them
    let recording = GradientRecording.isOn && [query, key, value].contains { $0.node != nil }
    let probabilities = Storage(uninitializedCount: recording ? g.batch * heads * g.length * g.length : 0)
    Profiler.measure("attention", flops: g.flops) {
        attentionForward(g, q: query.pointer, k: key.pointer, v: value.pointer, out: out.pointer,
                         probabilities: recording ? probabilities.pointer : nil)
    }
    let nq = query.node, nk = key.node, nv = value.node
    let q = query.storage, k = key.storage, v = value.storage
    return Tensor.result(query.shape, out, inputs: [query, key, value], op: "attention", backwardFlops: 2 * g.flops) { grad in
        // unused sinks still need somewhere to write; they are dropped afterwards
        let dq = nq?.gradientStorage() ?? Storage(zeros: q.count)
        let dk = nk?.gradientStorage() ?? Storage(zeros: k.count)
        let dv = nv?.gradientStorage() ?? Storage(zeros: v.count)
        attentionBackward(g, q: q.pointer, k: k.pointer, v: v.pointer, probabilities: probabilities.pointer,
                          dout: grad.pointer, dq: dq.pointer, dk: dk.pointer, dv: dv.pointer)
    }
}
