/// Ops that move data, and their gradients: upsampling, concatenation, transposition.

extension Tensor {
    /// Nearest-neighbour 2x upsampling of [N, C, H, W].
    public func upsampledNearest2x() -> Tensor {
        let (h, w) = (shape[2], shape[3]), planes = shape[0] * shape[1]
        let out = Storage(uninitializedCount: 4 * count)
        Profiler.measure("upsample") { upsampleNearest2xForward(pointer, planes: planes, height: h, width: w, out.pointer) }
        let n = node
        return Tensor.result([shape[0], shape[1], 2 * h, 2 * w], out, inputs: [self], op: "upsample") { g in
            upsampleNearest2xBackward(g.pointer, planes: planes, height: h, width: w, n!.gradientStorage().pointer)
        }
    }

    /// [B, R, C] -> [B, C, R] (a rank-2 tensor is one batch).
    public func transposedLastTwo() -> Tensor {
        let r = shape[rank - 2], c = shape[rank - 1], b = count / (r * c)
        let out = Storage(uninitializedCount: count)
        Profiler.measure("transpose") { transposeBatched(pointer, batch: b, rows: r, columns: c, out.pointer, add: false) }
        var newShape = shape
        newShape.swapAt(rank - 2, rank - 1)
        let n = node
        return Tensor.result(newShape, out, inputs: [self], op: "transpose") { g in
            let (d, add) = n!.gradientForWriting()
            transposeBatched(g.pointer, batch: b, rows: c, columns: r, d.pointer, add: add)
        }
    }
}

/// Concatenation along dimension 1 (channels) of tensors equal in every other dimension.
public func concatChannels(_ parts: [Tensor]) -> Tensor {
    let first = parts[0]
    let batch = first.shape[0], inner = first.count / (first.shape[0] * first.shape[1])
    for p in parts {
        require(p.shape[0] == batch && p.count / (p.shape[0] * p.shape[1]) == inner && p.rank == first.rank,
                "concat: shapes \(parts.map(\.shape)) differ outside dimension 1")
    }
    let channels = parts.map { $0.shape[1] }, total = channels.reduce(0, +)
    let out = Storage(uninitializedCount: batch * total * inner)
    Profiler.measure("concat") {
        var offset = 0
        for (p, c) in zip(parts, channels) {
            copyRows(p.pointer, srcStride: c * inner, out.pointer + offset * inner, dstStride: total * inner,
                     rows: batch, n: c * inner, add: false)
            offset += c
        }
    }
    var shape = first.shape
    shape[1] = total
    let nodes = parts.map(\.node)
    return Tensor.result(shape, out, inputs: parts, op: "concat") { g in
        var offset = 0
        for (n, c) in zip(nodes, channels) {
            if let n {
                let (d, add) = n.gradientForWriting()
                copyRows(g.pointer + offset * inner, srcStride: total * inner, d.pointer,
                         dstStride: c * inner, rows: batch, n: c * inner, add: add)
            }
            offset += c
        }
    }
}

extension Tensor {
    /// Channels `range` of [N, C, ...] (dimension 1), copied; the gradient goes back into them.
    public func channels(_ range: Range<Int>) -> Tensor {
        require(rank >= 2 && range.lowerBound >= 0 && range.upperBound <= shape[1], "channels \(range) of \(shape)")
        let batch = shape[0], total = shape[1], inner = count / (batch * total), c = range.count
        let out = Storage(uninitializedCount: batch * c * inner)
        copyRows(pointer + range.lowerBound * inner, srcStride: total * inner, out.pointer, dstStride: c * inner,
                 rows: batch, n: c * inner, add: false)
        var outShape = shape
        outShape[1] = c
        let n = node
        return Tensor.result(outShape, out, inputs: [self], op: "channels") { g in
            copyRows(g.pointer, srcStride: c * inner, n!.gradientStorage().pointer + range.lowerBound * inner,
                     dstStride: total * inner, rows: batch, n: c * inner, add: true)
        }
    }
}
