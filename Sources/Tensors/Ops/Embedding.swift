/// Table lookup and its gradient: the class embedding of a conditional U-Net.

extension Tensor {
    /// Rows `indices` of this table [K, D], as [indices.count, D] (PyTorch's `nn.Embedding`).
    /// The gradient adds each output row back into the row it came from.
    public func rows(_ indices: [Int]) -> Tensor {
        require(rank == 2, "rows: the table must be [K, D], is \(shape)")
        let (k, d) = (shape[0], shape[1])
        require(indices.allSatisfy { $0 >= 0 && $0 < k }, "rows: indices \(indices) outside 0..<\(k)")
        let out = Storage(uninitializedCount: indices.count * d)
        for (r, i) in indices.enumerated() { (out.pointer + r * d).update(from: pointer + i * d, count: d) }
        let n = node
        return Tensor.result([indices.count, d], out, inputs: [self], op: "rows") { g in
            let sink = n!.gradientStorage().pointer
            for (r, i) in indices.enumerated() { accumulate(sink + i * d, g.pointer + r * d, count: d) }
        }
    }
}
