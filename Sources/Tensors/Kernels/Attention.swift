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
    blasAttentionForward(g, q: q, k: k, v: v, out: out, probabilities: probabilities)
}

/// One sgemm per product and (batch, head).
func blasAttentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                          v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                          probabilities: UnsafeMutablePointer<Float>?) {
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
    blasAttentionBackward(g, q: q, k: k, v: v, probabilities: probabilities, dout: dout, dq: dq, dk: dk, dv: dv)
}

func blasAttentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                           v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                           dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                           dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let (l, w, d) = (g.length, g.width, g.headDim)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), pp = SharedPointer(probabilities)
    let pdo = SharedPointer(dout), pdq = SharedPointer(dq), pdk = SharedPointer(dk), pdv = SharedPointer(dv)
    parallelFor(g.batch * g.heads, cost: 8 * l * l * d) { pairs in
        let ds = UnsafeMutablePointer<Float>.allocate(capacity: l * l)  // dP, then dS in place
        defer { ds.deallocate() }
        for pair in pairs {
            let p = pp + pair * l * l, off = pair / g.heads * l * w + pair % g.heads * d
            gemm(transposeA: true, m: l, n: d, k: l, a: p, lda: l, b: pdo + off, ldb: w, beta: 1, c: pdv + off, ldc: w)
            gemm(transposeB: true, m: l, n: l, k: d, a: pdo + off, lda: w, b: pv + off, ldb: w, c: ds, ldc: l)
            for i in 0..<l { softmaxBackwardRow(p + i * l, ds + i * l, l) }
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
/// one (batch, head) pair per task, split across cores. K (scaled by 1/sqrt(d)) and V are
/// transposed into [d, L] scratch so that every inner loop runs over L contiguous floats, and
/// query rows go two at a time so that each vector of K^T or V^T loaded serves both: a row of
/// scores is sum_e q[i, e] K^T[e, :], an output element dot(P[i, :], V^T[e, :]).
func smallHeadAttentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                               probabilities: UnsafeMutablePointer<Float>?) {
    let (l, w, d, scale) = (g.length, g.width, g.headDim, g.scale)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v)
    let po = SharedPointer(out), pp = probabilities.map { SharedPointer($0) }
    parallelFor(g.batch * g.heads, cost: 4 * l * l * d) { pairs in
        let kt = UnsafeMutablePointer<Float>.allocate(capacity: 2 * d * l + 2 * l + 2 * d)
        defer { kt.deallocate() }
        let vt = kt + d * l, scratch = vt + d * l, dump = scratch + 2 * l
        for pair in pairs {
            let off = pair / g.heads * l * w + pair % g.heads * d
            transposeHead(pk + off, rows: l, width: w, headDim: d, scale: scale, into: kt)
            transposeHead(pv + off, rows: l, width: w, headDim: d, into: vt)
            for i in stride(from: 0, to: l, by: 2) {
                // an odd last row goes twice, its copy's results to scratch
                let i1 = min(i + 1, l - 1), twin = i1 == i
                let row0 = pp.map { $0 + (pair * l + i) * l } ?? scratch
                let row1 = twin ? scratch + l : pp.map { $0 + (pair * l + i1) * l } ?? scratch + l
                scoreRows(pq + off + i * w, pq + off + i1 * w, kt, length: l, headDim: d, into: row0, row1)
                softmaxRow(row0, l)
                softmaxRow(row1, l)
                weightedRows(row0, row1, vt, length: l, headDim: d, into: po + off + i * w, twin ? dump : po + off + i1 * w)
            }
        }
    }
}

/// Two rows of scores: rowN[j] = sum_e qN[e] K^T[e, j], 32 keys x 2 rows in eight registers.
@inline(__always)
func scoreRows(_ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ kt: UnsafePointer<Float>,
               length l: Int, headDim d: Int, into row0: UnsafeMutablePointer<Float>, _ row1: UnsafeMutablePointer<Float>) {
    var j = 0
    while j + 32 <= l {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
        for e in 0..<d {
            let k = kt + e * l + j, x = SIMD8(repeating: q0[e]), y = SIMD8(repeating: q1[e])
            let k0 = load8(k), k1 = load8(k + 8), k2 = load8(k + 16), k3 = load8(k + 24)
            a0.addProduct(x, k0); a1.addProduct(x, k1); a2.addProduct(x, k2); a3.addProduct(x, k3)
            b0.addProduct(y, k0); b1.addProduct(y, k1); b2.addProduct(y, k2); b3.addProduct(y, k3)
        }
        store8(a0, row0 + j); store8(a1, row0 + j + 8); store8(a2, row0 + j + 16); store8(a3, row0 + j + 24)
        store8(b0, row1 + j); store8(b1, row1 + j + 8); store8(b2, row1 + j + 16); store8(b3, row1 + j + 24)
        j += 32
    }
    // then blocks of 8, the last one overlapping the one before when l is not a multiple of 8
    while j < l, l >= 8 {
        j = min(j, l - 8)
        var a = SIMD8<Float>(), b = SIMD8<Float>()
        for e in 0..<d {
            let k = load8(kt + e * l + j)
            a.addProduct(SIMD8(repeating: q0[e]), k); b.addProduct(SIMD8(repeating: q1[e]), k)
        }
        store8(a, row0 + j); store8(b, row1 + j)
        j += 8
    }
    while j < l {
        var a: Float = 0, b: Float = 0
        for e in 0..<d { a += q0[e] * kt[e * l + j]; b += q1[e] * kt[e * l + j] }
        row0[j] = a; row1[j] = b
        j += 1
    }
}

/// Two rows of outputs: outN[e] = dot(rowN, V^T[e, :]), four columns x 2 rows at a time.
@inline(__always)
func weightedRows(_ p0: UnsafePointer<Float>, _ p1: UnsafePointer<Float>, _ vt: UnsafePointer<Float>,
                  length l: Int, headDim d: Int, into out0: UnsafeMutablePointer<Float>, _ out1: UnsafeMutablePointer<Float>) {
    let whole = l / 8 * 8
    var tailMask = SIMD8<Float>()
    for lane in 0..<8 where lane >= 8 - (l - whole) { tailMask[lane] = 1 }
    var e = 0
    while e + 4 <= d, l >= 8 {
        let v0 = vt + e * l, v1 = v0 + l, v2 = v1 + l, v3 = v2 + l
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
        for j in stride(from: 0, to: whole, by: 8) {
            let x = load8(p0 + j), y = load8(p1 + j)
            var t = load8(v0 + j); a0.addProduct(x, t); b0.addProduct(y, t)
            t = load8(v1 + j); a1.addProduct(x, t); b1.addProduct(y, t)
            t = load8(v2 + j); a2.addProduct(x, t); b2.addProduct(y, t)
            t = load8(v3 + j); a3.addProduct(x, t); b3.addProduct(y, t)
        }
        if whole < l {
            // the last 8 columns, their first lanes (already summed) masked out of the row
            let j = l - 8
            let x = load8(p0 + j) * tailMask, y = load8(p1 + j) * tailMask
            var t = load8(v0 + j); a0.addProduct(x, t); b0.addProduct(y, t)
            t = load8(v1 + j); a1.addProduct(x, t); b1.addProduct(y, t)
            t = load8(v2 + j); a2.addProduct(x, t); b2.addProduct(y, t)
            t = load8(v3 + j); a3.addProduct(x, t); b3.addProduct(y, t)
        }
        out0[e] = a0.sum(); out0[e + 1] = a1.sum(); out0[e + 2] = a2.sum(); out0[e + 3] = a3.sum()
        out1[e] = b0.sum(); out1[e + 1] = b1.sum(); out1[e + 2] = b2.sum(); out1[e + 3] = b3.sum()
        e += 4
    }
    while e < d {
        out0[e] = dot(p0, vt + e * l, count: l); out1[e] = dot(p1, vt + e * l, count: l)
        e += 1
    }
}

/// The backward pass of `smallHeadAttentionForward`, per (batch, head), in two sweeps.
/// Over pairs of query rows: dP[i, :] = sum_e dO[i, e] V^T[e, :] (as scores are made),
/// dS = P (dP - dot(P, dP)) kept for the head, and dQ[i, e] += dot(dS[i, :], s K^T[e, :]) (as outputs
/// are). Then over the whole head: dV^T = dO^T P and dK^T = s Q^T dS, register-blocked sums of outer
/// products, added into dV and dK. Nothing is read and written back per row.
func smallHeadAttentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>) {
    let (l, w, d, scale) = (g.length, g.width, g.headDim, g.scale)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), pp = SharedPointer(probabilities)
    let pdo = SharedPointer(dout), pdq = SharedPointer(dq), pdk = SharedPointer(dk), pdv = SharedPointer(dv)
    parallelFor(g.batch * g.heads, cost: 8 * l * l * d) { pairs in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * d * l + l * l + 4 * d)
        defer { scratch.deallocate() }
        let kt = scratch, vt = kt + d * l, t = vt + d * l, ds = t + d * l, rows = ds + l * l
        for pair in pairs {
            let off = pair / g.heads * l * w + pair % g.heads * d, p = pp + pair * l * l
            transposeHead(pk + off, rows: l, width: w, headDim: d, scale: scale, into: kt)
            transposeHead(pv + off, rows: l, width: w, headDim: d, into: vt)
            for i in stride(from: 0, to: l, by: 2) {
                let i1 = min(i + 1, l - 1)  // an odd last row goes twice
                let ds0 = ds + i * l, ds1 = ds + i1 * l
                scoreRows(pdo + off + i * w, pdo + off + i1 * w, vt, length: l, headDim: d, into: ds0, ds1)
                softmaxBackwardRow(p + i * l, ds0, l)
                if i1 != i { softmaxBackwardRow(p + i1 * l, ds1, l) }
                weightedRows(ds0, ds1, kt, length: l, headDim: d, into: rows, rows + d)
                let dq0 = pdq + off + i * w
                for e in 0..<d { dq0[e] += rows[e] }
                if i1 != i { let dq1 = pdq + off + i1 * w; for e in 0..<d { dq1[e] += rows[d + e] } }
            }
            outerProductSum(pdo + off, stride: w, p, stride: l, rows: l, headDim: d, length: l, scale: 1, into: t)
            addTransposedHead(t, rows: l, width: w, headDim: d, into: pdv + off)
            outerProductSum(pq + off, stride: w, ds, stride: l, rows: l, headDim: d, length: l, scale: scale, into: t)
            addTransposedHead(t, rows: l, width: w, headDim: d, into: pdk + off)
        }
    }
}

/// g = y (g - dot(y, g)) in place: softmax backward for one row, from its output y.
@inline(__always)
func softmaxBackwardRow(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int) {
    let yg = dot(y, g, count: n)
    for j in 0..<n { g[j] = y[j] * (g[j] - yg) }
}

/// t[e, j] = scale sum_i a[i, e] b[i, j] for e < d, j < l: a is [rows, d] at row stride `sa`, b is
/// [rows, l] at `sb`, t is [d, l]. Blocks of 4 x 16 accumulate in eight registers over all rows,
/// each step 6 loads for 8 FMAs; a last partial block of columns overlaps the one before.
@inline(__always)
func outerProductSum(_ a: UnsafePointer<Float>, stride sa: Int, _ b: UnsafePointer<Float>, stride sb: Int,
                     rows: Int, headDim d: Int, length l: Int, scale: Float, into t: UnsafeMutablePointer<Float>) {
    let s = SIMD8<Float>(repeating: scale)
    var e = 0
    while e + 4 <= d, l >= 16 {
        var j = 0
        while j < l {
            let jj = min(j, l - 16)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
            for i in 0..<rows {
                let ar = a + (i &* sa &+ e), br = b + (i &* sb &+ jj)
                let x = load8(br), y = load8(br + 8)
                var c = SIMD8(repeating: ar[0]); a0.addProduct(c, x); b0.addProduct(c, y)
                c = SIMD8(repeating: ar[1]); a1.addProduct(c, x); b1.addProduct(c, y)
                c = SIMD8(repeating: ar[2]); a2.addProduct(c, x); b2.addProduct(c, y)
                c = SIMD8(repeating: ar[3]); a3.addProduct(c, x); b3.addProduct(c, y)
            }
            let tr = t + e * l + jj
            store8(a0 * s, tr); store8(b0 * s, tr + 8)
            store8(a1 * s, tr + l); store8(b1 * s, tr + l + 8)
            store8(a2 * s, tr + 2 * l); store8(b2 * s, tr + 2 * l + 8)
            store8(a3 * s, tr + 3 * l); store8(b3 * s, tr + 3 * l + 8)
            j += 16
        }
        e += 4
    }
    // rows of t left over (d not a multiple of 4, or l under 16)
    for e in e..<d {
        let te = t + e * l
        te.update(repeating: 0, count: l)
        for i in 0..<rows {
            let c = scale * a[i * sa + e], br = b + i * sb
            for j in 0..<l { te[j] += c * br[j] }
        }
    }
}

/// One head's [L, d] slice of a [L, w] matrix, transposed into [d, L] and multiplied by `scale`.
@inline(__always)
func transposeHead(_ x: UnsafePointer<Float>, rows l: Int, width w: Int, headDim d: Int, scale: Float = 1,
                   into t: UnsafeMutablePointer<Float>) {
    for j in 0..<l {
        let xj = x + j &* w
        for e in 0..<d { t[e &* l &+ j] = xj[e] * scale }
    }
}

/// x[j, e] += t[e, j] for one head's [L, d] slice of a [L, w] matrix.
@inline(__always)
func addTransposedHead(_ t: UnsafePointer<Float>, rows l: Int, width w: Int, headDim d: Int,
                       into x: UnsafeMutablePointer<Float>) {
    for j in 0..<l {
        let xj = x + j &* w
        for e in 0..<d { xj[e] += t[e &* l &+ j] }
    }
}
