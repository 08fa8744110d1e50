import Foundation

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

/// Softmax of one row in place.
@inline(__always)
func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ n: Int) {
    let m = maximum(row, count: n)
    for i in 0..<n { row[i] = fastExp(row[i] - m) }
    let inv = 1 / sum(row, count: n)
    for i in 0..<n { row[i] *= inv }
}

/// Row-wise softmax in place over `rows` rows of `n`.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
    let p = SharedPointer(x)
    parallelFor(rows, cost: 8 * n) { range in
        for r in range {
            softmaxRow(p + r * n, n)
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
            let yg = dot(yr, gr, count: n)
            for i in 0..<n { dr[i] += yr[i] * (gr[i] - yg) }
        }
    }
}

/// Heads up to this size use `smallHeadAttentionForward`; larger ones BLAS per (batch, head).
let smallHeadLimit = 32

/// `probabilities` [B, H, L, L] receives softmax(QK^T / sqrt(d)) for the backward pass; pass nil
/// when there is none (sampling), and small heads keep only one row at a time.
public func attentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                             v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                             probabilities: UnsafeMutablePointer<Float>?) {
    if g.headDim <= smallHeadLimit {
        return smallHeadAttentionForward(g, q: q, k: k, v: v, out: out, probabilities: probabilities)
    }
    let (l, w, d) = (g.length, g.width, g.headDim)
    let scratch = probabilities == nil ? Storage(uninitializedCount: g.batch * g.heads * l * l) : nil
    let pp = SharedPointer(probabilities ?? scratch!.pointer)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), po = SharedPointer(out)
    parallelFor(g.batch * g.heads, cost: 4 * l * l * d) { pairs in
        for pair in pairs {
            let p = pp + pair * l * l, off = pair / g.heads * l * w + pair % g.heads * d
            gemm(transposeB: true, m: l, n: l, k: d, alpha: g.scale, a: pq + off, lda: w, b: pk + off, ldb: w, c: p, ldc: l)
            for i in 0..<l { softmaxRow(p + i * l, l) }
            gemm(m: l, n: d, k: l, a: p, lda: l, b: pv + off, ldb: w, c: po + off, ldc: w)
        }
    }
}

/// Adds dq, dk, dv. dP = dO V^T; dS = softmax backward; dQ = dS K s; dK = dS^T Q s; dV = P^T dO.
public func attentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                              dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                              dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    if g.headDim <= smallHeadLimit {
        return smallHeadAttentionBackward(g, q: q, k: k, v: v, probabilities: probabilities, dout: dout, dq: dq, dk: dk, dv: dv)
    }
    let (l, w, d) = (g.length, g.width, g.headDim)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), pp = SharedPointer(probabilities)
    let pdo = SharedPointer(dout), pdq = SharedPointer(dq), pdk = SharedPointer(dk), pdv = SharedPointer(dv)
    parallelFor(g.batch * g.heads, cost: 8 * l * l * d) { pairs in
        let dp = UnsafeMutablePointer<Float>.allocate(capacity: 2 * l * l), ds = dp + l * l
        defer { dp.deallocate() }
        for pair in pairs {
            let p = pp + pair * l * l, off = pair / g.heads * l * w + pair % g.heads * d
            gemm(transposeA: true, m: l, n: d, k: l, a: p, lda: l, b: pdo + off, ldb: w, beta: 1, c: pdv + off, ldc: w)
            gemm(transposeB: true, m: l, n: l, k: d, a: pdo + off, lda: w, b: pv + off, ldb: w, c: dp, ldc: l)
            for i in 0..<l {
                let pr = p + i * l, gr = dp + i * l, dr = ds + i * l
                let yg = dot(pr, gr, count: l)
                for j in 0..<l { dr[j] = pr[j] * (gr[j] - yg) }
            }
            gemm(m: l, n: d, k: l, alpha: g.scale, a: ds, lda: l, b: pk + off, ldb: w, beta: 1, c: pdq + off, ldc: w)
            gemm(transposeA: true, m: l, n: d, k: l, alpha: g.scale, a: ds, lda: l, b: pq + off, ldb: w, beta: 1, c: pdk + off, ldc: w)
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


// MARK: - Small heads

/// Attention for head dimensions too small for BLAS to pay (the fmnist preset's heads are 8 wide):
/// one (batch, head) pair per task, split across cores. K and V are transposed into [d, L]
/// scratch so that every inner loop runs over L contiguous floats: a row of scores is
/// sum_e q[i, e] K^T[e, :], and an output element is dot(P[i, :], V^T[e, :]).
func smallHeadAttentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                               probabilities: UnsafeMutablePointer<Float>?) {
    let (l, w, d, scale) = (g.length, g.width, g.headDim, g.scale)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v)
    let po = SharedPointer(out), pp = probabilities.map { SharedPointer($0) }
    parallelFor(g.batch * g.heads, cost: 4 * l * l * d) { pairs in
        let kt = UnsafeMutablePointer<Float>.allocate(capacity: 2 * d * l + l), vt = kt + d * l, rowScratch = vt + d * l
        defer { kt.deallocate() }
        for pair in pairs {
            let off = pair / g.heads * l * w + pair % g.heads * d
            transposeHead(pk + off, rows: l, width: w, headDim: d, into: kt)
            transposeHead(pv + off, rows: l, width: w, headDim: d, into: vt)
            for i in 0..<l {
                let row = pp.map { $0 + (pair * l + i) * l } ?? rowScratch, qi = pq + off + i * w
                scoreRow(qi, kt, length: l, headDim: d, scale: scale, into: row)
                softmaxRow(row, l)
                let o = po + off + i * w
                if d % 8 == 0 {
                    // O[i, :] = sum_j P[i, j] V[j, :], eight output columns per register
                    // (four accumulators: one FMA chain would wait on its latency)
                    for e in stride(from: 0, to: d, by: 8) {
                        let ve = pv + off + e
                        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                        var j = 0
                        while j + 4 <= l {
                            a0.addProduct(SIMD8(repeating: row[j]), load8(ve + j * w))
                            a1.addProduct(SIMD8(repeating: row[j + 1]), load8(ve + (j + 1) * w))
                            a2.addProduct(SIMD8(repeating: row[j + 2]), load8(ve + (j + 2) * w))
                            a3.addProduct(SIMD8(repeating: row[j + 3]), load8(ve + (j + 3) * w))
                            j += 4
                        }
                        while j < l { a0.addProduct(SIMD8(repeating: row[j]), load8(ve + j * w)); j += 1 }
                        UnsafeMutableRawPointer(o + e).storeBytes(of: (a0 + a1) + (a2 + a3), as: SIMD8<Float>.self)
                    }
                } else {
                    for e in 0..<d { o[e] = dot(row, vt + e * l, count: l) }
                }
            }
        }
    }
}

/// The backward pass of `smallHeadAttentionForward`, per (batch, head):
/// dV^T[e, :] += sum_i dO[i, e] P[i, :]; dP[i, :] = sum_e dO[i, e] V^T[e, :];
/// dS = P (dP - dot(P, dP)); dQ[i, e] += s dot(dS[i, :], K^T[e, :]); dK^T[e, :] += s sum_i Q[i, e] dS[i, :].
func smallHeadAttentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let (l, w, d, scale) = (g.length, g.width, g.headDim, g.scale)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), pp = SharedPointer(probabilities)
    let pdo = SharedPointer(dout), pdq = SharedPointer(dq), pdk = SharedPointer(dk), pdv = SharedPointer(dv)
    parallelFor(g.batch * g.heads, cost: 8 * l * l * d) { pairs in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 4 * d * l + l)
        defer { scratch.deallocate() }
        let kt = scratch, vt = kt + d * l, dkt = vt + d * l, dvt = dkt + d * l, ds = dvt + d * l
        for pair in pairs {
            let off = pair / g.heads * l * w + pair % g.heads * d
            transposeHead(pk + off, rows: l, width: w, headDim: d, into: kt)
            transposeHead(pv + off, rows: l, width: w, headDim: d, into: vt)
            dkt.update(repeating: 0, count: 2 * d * l)  // dkt and dvt
            for i in 0..<l {
                let p = pp + (pair * l + i) * l, doi = pdo + off + i * w, qi = pq + off + i * w
                // dV^T and dP
                let g0 = doi[0]
                for j in 0..<l { ds[j] = g0 * vt[j] }
                for e in 0..<d {
                    let ge = doi[e], dve = dvt + e * l
                    for j in 0..<l { dve[j] += ge * p[j] }
                    if e > 0 { let ve = vt + e * l; for j in 0..<l { ds[j] += ge * ve[j] } }
                }
                // dS = P (dP - dot(P, dP))
                let pdp = dot(p, ds, count: l)
                for j in 0..<l { ds[j] = p[j] * (ds[j] - pdp) }
                // dQ and dK^T
                let dqi = pdq + off + i * w
                for e in 0..<d {
                    dqi[e] += scale * dot(ds, kt + e * l, count: l)
                    let qe = scale * qi[e], dke = dkt + e * l
                    for j in 0..<l { dke[j] += qe * ds[j] }
                }
            }
            for j in 0..<l {
                let dkj = pdk + off + j * w, dvj = pdv + off + j * w
                for e in 0..<d { dkj[e] += dkt[e * l + j]; dvj[e] += dvt[e * l + j] }
            }
        }
    }
}

/// row[j] = scale sum_e q[e] K^T[e, j]: 32 scores held in four registers across the head dimension,
/// so each is stored once.
@inline(__always)
func scoreRow(_ q: UnsafePointer<Float>, _ kt: UnsafePointer<Float>, length l: Int, headDim d: Int, scale: Float,
              into row: UnsafeMutablePointer<Float>) {
    var j = 0
    while j + 32 <= l {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        for e in 0..<d {
            let qe = SIMD8<Float>(repeating: q[e] * scale), k = kt + e * l + j
            a0.addProduct(qe, load8(k)); a1.addProduct(qe, load8(k + 8))
            a2.addProduct(qe, load8(k + 16)); a3.addProduct(qe, load8(k + 24))
        }
        let r = UnsafeMutableRawPointer(row + j)
        r.storeBytes(of: a0, as: SIMD8<Float>.self); r.storeBytes(of: a1, toByteOffset: 32, as: SIMD8<Float>.self)
        r.storeBytes(of: a2, toByteOffset: 64, as: SIMD8<Float>.self); r.storeBytes(of: a3, toByteOffset: 96, as: SIMD8<Float>.self)
        j += 32
    }
    while j + 8 <= l {
        var a = SIMD8<Float>()
        for e in 0..<d { a.addProduct(SIMD8(repeating: q[e] * scale), load8(kt + e * l + j)) }
        UnsafeMutableRawPointer(row + j).storeBytes(of: a, as: SIMD8<Float>.self)
        j += 8
    }
    while j < l {
        var a: Float = 0
        for e in 0..<d { a += q[e] * kt[e * l + j] }
        row[j] = a * scale
        j += 1
    }
}

/// One head's [L, d] slice of a [L, w] matrix, transposed into [d, L].
@inline(__always)
func transposeHead(_ x: UnsafeMutablePointer<Float>, rows l: Int, width w: Int, headDim d: Int,
                   into t: UnsafeMutablePointer<Float>) {
    for j in 0..<l { for e in 0..<d { t[e * l + j] = x[j * w + e] } }
}
