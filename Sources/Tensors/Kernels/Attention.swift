/// Scaled dot-product attention (Vaswani et al. 2017) over heads packed side by side.
///
/// q, k, v, out: [B, L, H d] (token-major, heads contiguous within a token, as a linear layer
/// writes them); probabilities saved for backward: [B, H, L, L].
/// For each (b, h): S = Q K^T / sqrt(d), P = softmax(S) by rows, O = P V. Each product is one sgemm
/// reading the head's columns through the leading dimension, so heads are never copied out.

public struct AttentionGeometry: Sendable {
    public var batch, length, heads, headDim: Int
    public init(batch: Int, length: Int, heads: Int, headDim: Int) {
        self.batch = batch; self.length = length; self.heads = heads; self.headDim = headDim
    }
    var width: Int { heads * headDim }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    /// Multiply-adds x 2 of the forward pass (QK^T and PV).
    public var flops: Double { 4 * Double(batch * heads * length * length * headDim) }
}

/// Row-wise softmax in place over `rows` rows of `n`.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
    let p = SharedPointer(x)
    parallelFor(rows, cost: 8 * n) { range in
        for r in range {
            let row = p + r * n
            var m = -Float.infinity
            for i in 0..<n { m = max(m, row[i]) }
            var s: Float = 0
            for i in 0..<n { let e = fastExp(row[i] - m); row[i] = e; s += e }
            let inv = 1 / s
            for i in 0..<n { row[i] *= inv }
        }
    }
}

/// dx += y * (dy - sum(dy * y)) row-wise, the softmax backward from its output y.
public func softmaxRowsBackward(_ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                _ dx: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
    let py = SharedPointer(y), pg = SharedPointer(dy), pd = SharedPointer(dx)
    parallelFor(rows, cost: 4 * n) { range in
        for r in range {
            let yr = py + r * n, gr = pg + r * n, dr = pd + r * n
            var dot: Float = 0
            for i in 0..<n { dot += yr[i] * gr[i] }
            for i in 0..<n { dr[i] += yr[i] * (gr[i] - dot) }
        }
    }
}

public func attentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                             v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                             probabilities: UnsafeMutablePointer<Float>) {
    let l = g.length, w = g.width, d = g.headDim
    for b in 0..<g.batch {
        for h in 0..<g.heads {
            let p = probabilities + (b * g.heads + h) * l * l
            let off = b * l * w + h * d
            gemm(transposeB: true, m: l, n: l, k: d, alpha: g.scale, a: q + off, lda: w,
                 b: k + off, ldb: w, c: p, ldc: l)
        }
    }
    softmaxRows(probabilities, rows: g.batch * g.heads * l, n: l)
    for b in 0..<g.batch {
        for h in 0..<g.heads {
            let p = probabilities + (b * g.heads + h) * l * l
            let off = b * l * w + h * d
            gemm(m: l, n: d, k: l, a: p, lda: l, b: v + off, ldb: w, c: out + off, ldc: w)
        }
    }
}

/// Adds dq, dk, dv. dP = dO V^T; dS = softmax backward; dQ = dS K s; dK = dS^T Q s; dV = P^T dO.
public func attentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                              dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                              dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let l = g.length, w = g.width, d = g.headDim
    let dp = Storage(uninitializedCount: l * l), ds = Storage(uninitializedCount: l * l)
    for b in 0..<g.batch {
        for h in 0..<g.heads {
            let p = probabilities + (b * g.heads + h) * l * l
            let off = b * l * w + h * d
            gemm(transposeA: true, m: l, n: d, k: l, a: p, lda: l, b: dout + off, ldb: w,
                 beta: 1, c: dv + off, ldc: w)
            gemm(transposeB: true, m: l, n: l, k: d, a: dout + off, lda: w, b: v + off, ldb: w,
                 c: dp.pointer, ldc: l)
            ds.pointer.update(repeating: 0, count: l * l)
            softmaxRowsBackward(p, dp.pointer, ds.pointer, rows: l, n: l)
            gemm(m: l, n: d, k: l, alpha: g.scale, a: ds.pointer, lda: l, b: k + off, ldb: w,
                 beta: 1, c: dq + off, ldc: w)
            gemm(transposeA: true, m: l, n: d, k: l, alpha: g.scale, a: ds.pointer, lda: l,
                 b: q + off, ldb: w, beta: 1, c: dk + off, ldc: w)
        }
    }
}

/// The naive twin: softmax(Q K^T / sqrt(d)) V by loops in Double.
public func attentionNaive(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                           v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
    let l = g.length, w = g.width, d = g.headDim
    var s = [Double](repeating: 0, count: l)
    for b in 0..<g.batch {
        for h in 0..<g.heads {
            for i in 0..<l {
                for j in 0..<l {
                    var dot = 0.0
                    for e in 0..<d {
                        dot += Double(q[b * l * w + i * w + h * d + e]) * Double(k[b * l * w + j * w + h * d + e])
                    }
                    s[j] = dot / Double(d).squareRoot()
                }
                let m = s.max()!
                let e = s.map { Foundation.exp($0 - m) }
                let total = e.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for j in 0..<l { acc += e[j] / total * Double(v[b * l * w + j * w + h * d + c]) }
                    out[b * l * w + i * w + h * d + c] = Float(acc)
                }
            }
        }
    }
}

import Foundation
