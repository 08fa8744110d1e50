import Foundation

/// The ops a classifier needs beyond the U-Net's: global average pooling and cross-entropy.

extension Tensor {
    /// The mean over the spatial dimensions: [N, C, H, W] -> [N, C] (global average pooling).
    public func spatialMean() -> Tensor {
        require(rank == 4, "spatialMean: input \(shape) is not [N, C, H, W]")
        let planes = shape[0] * shape[1], pixels = shape[2] * shape[3]
        let out = Storage(uninitializedCount: planes)
        for p in 0..<planes { out.pointer[p] = Float(sumOfElements(pointer + p * pixels, count: pixels) / Double(pixels)) }
        let n = node
        return Tensor.result([shape[0], shape[1]], out, inputs: [self], op: "spatialMean") { g in
            let d = n!.gradientStorage().pointer
            for p in 0..<planes {
                let v = g.pointer[p] / Float(pixels)
                for i in 0..<pixels { d[p * pixels + i] += v }
            }
        }
    }
}

/// The mean over rows of -log softmax(logits)[label]: logits [N, K], one label in 0..<K per row.
/// Its gradient is (softmax - one-hot) / N.
public func crossEntropy(_ logits: Tensor, labels: [Int]) -> Tensor {
    require(logits.rank == 2 && logits.shape[0] == labels.count, "crossEntropy: logits \(logits.shape) for \(labels.count) labels")
    let (rows, k) = (logits.shape[0], logits.shape[1])
    require(labels.allSatisfy { (0..<k).contains($0) }, "crossEntropy: a label outside 0..<\(k)")
    let probabilities = logits.storage.copy()
    softmaxRows(probabilities.pointer, rows: rows, n: k)
    var total = 0.0
    for (r, label) in labels.enumerated() {
        let row = logits.pointer + r * k
        let top = (0..<k).map { Double(row[$0]) }.max()!
        let logSum = top + log((0..<k).reduce(0.0) { $0 + exp(Double(row[$1]) - top) })
        total += logSum - Double(row[label])
    }
    let n = logits.node
    return Tensor.result([], Storage([Float(total / Double(rows))]), inputs: [logits], op: "crossEntropy") { g in
        let d = n!.gradientStorage().pointer, scale = g.pointer[0] / Float(rows)
        for (r, label) in labels.enumerated() {
            for j in 0..<k { d[r * k + j] += scale * (probabilities.pointer[r * k + j] - (j == label ? 1 : 0)) }
        }
    }
}
