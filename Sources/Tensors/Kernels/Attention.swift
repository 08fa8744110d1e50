import Foundation

/// Scaled dot-product attention (Vaswani et al. 2017) over heads packed side by side.
///
/// q, k, v, out: [B, L, H d] (token-major, heads contiguous within a token, as a linear layer
/// writes them). What the forward pass keeps for the backward one (`AttentionGeometry.savedCount`)
/// depends on the head size: BLAS's heads keep the probabilities [B, H, L, L]; small heads keep
/// each query row's log-sum-exp [B, H, L] and recompute their probabilities, as FlashAttention
/// does (Dao et al. 2022), so that training does not hold B H L^2 floats per attention layer.
/// In the forward pass q, k and v may be thirds of one product [B, L, 3 H d] (`tokenStride`
/// 3 H d), read in place.
/// For each (b, h): S = Q K^T / sqrt(d), P = softmax(S) by rows, O = P V. Each product is one sgemm
/// reading the head's columns through the leading dimension, so heads are never copied out.

public struct AttentionGeometry: Sendable {
    public var batch, length, heads, headDim: Int
    /// Floats from one token of q, k or v to the next (and from one image to the next, L of them):
    /// the width H d, or 3 H d when they are one product's thirds (forward only).
    public var tokenStride: Int
    public init(batch: Int, length: Int, heads: Int, headDim: Int, tokenStride: Int? = nil) {
        self.batch = batch; self.length = length; self.heads = heads; self.headDim = headDim
        self.tokenStride = tokenStride ?? heads * headDim
    }
    var width: Int { heads * headDim }
    /// Whether the heads are small enough for `smallHeadAttentionForward` (BLAS does not pay).
    var smallHeads: Bool { headDim <= smallHeadLimit }
    /// Floats the forward pass keeps for the backward pass: each query row's log-sum-exp [B, H, L]
    /// for small heads, the probabilities [B, H, L, L] otherwise.
    public var savedCount: Int { batch * heads * length * (smallHeads ? 1 : length) }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    /// Multiply-adds x 2 of the forward pass (QK^T and PV).
    public var flops: Double { 4 * Double(batch * heads * length * length * headDim) }
}

/// Row-wise softmax in place over `rows` rows of `n`.
public func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, n: Int, kernels: KernelSet = .active) {
    let p = SharedPointer(x)
    parallelFor(rows, cost: 8 * n) { range in
        for r in range { kernels.k.softmax_row(p + r * n, n) }
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

/// `saved` (`g.savedCount` floats) receives what the backward pass needs; pass nil when there is
/// none (sampling).
public func attentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                             v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                             saved: UnsafeMutablePointer<Float>?, kernels: KernelSet = .active) {
    if g.smallHeads {
        return smallHeadAttentionForward(g, q: q, k: k, v: v, out: out, logSumExp: saved, kernels: kernels)
    }
    blasAttentionForward(g, q: q, k: k, v: v, out: out, probabilities: saved, kernels: kernels)
}

/// One sgemm per product and (batch, head).
func blasAttentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                          v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                          probabilities: UnsafeMutablePointer<Float>?, kernels: KernelSet = .active) {
    let (l, w, d, s) = (g.length, g.width, g.headDim, g.tokenStride)
    let scratch = probabilities == nil ? Storage(uninitializedCount: g.batch * g.heads * l * l) : nil
    let pp = SharedPointer(probabilities ?? scratch!.pointer)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), po = SharedPointer(out)
    parallelFor(g.batch * g.heads, cost: 4 * l * l * d) { pairs in
        for pair in pairs {
            let p = pp + pair * l * l, head = pair % g.heads * d
            let off = pair / g.heads * l * s + head, outOff = pair / g.heads * l * w + head
            gemm(transposeB: true, m: l, n: l, k: d, alpha: g.scale, a: pq + off, lda: s, b: pk + off, ldb: s, c: p, ldc: l)
            for i in 0..<l { kernels.k.softmax_row(p + i * l, l) }
            gemm(m: l, n: d, k: l, a: p, lda: l, b: pv + off, ldb: s, c: po + outOff, ldc: w)
        }
    }
}

/// Adds dq, dk, dv from what the forward pass `saved`. dP = dO V^T; dS = softmax backward;
/// dQ = dS K s; dK = dS^T Q s; dV = P^T dO.
public func attentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                              v: UnsafePointer<Float>, saved: UnsafePointer<Float>,
                              dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                              dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    require(g.tokenStride == g.width, "attention backward: q, k and v are separate [B, L, H d]")
    if g.smallHeads {
        return smallHeadAttentionBackward(g, q: q, k: k, v: v, logSumExp: saved, dout: dout, dq: dq, dk: dk, dv: dv,
                                          kernels: kernels)
    }
    blasAttentionBackward(g, q: q, k: k, v: v, probabilities: saved, dout: dout, dq: dq, dk: dk, dv: dv, kernels: kernels)
}

func blasAttentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                           v: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                           dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                           dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
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
            for i in 0..<l { kernels.k.softmax_backward_row(p + i * l, ds + i * l, l) }
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
/// scores is sum_e q[i, e] K^T[e, :], an output element dot(P[i, :], V^T[e, :]). A row's
/// exponentials and weighted sums are one call (`attention_softmax_rows`); the exponentials are
/// not divided by their sum, the d outputs are, in the same call. `logSumExp` [B, H, L], when
/// given, receives max + log(sum) of each row of scores, from which the backward pass recomputes
/// the row's probabilities.
func smallHeadAttentionForward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                               logSumExp: UnsafeMutablePointer<Float>?, kernels: KernelSet = .active) {
    let (l, w, d, scale, s) = (g.length, g.width, g.headDim, g.scale, g.tokenStride)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v)
    let po = SharedPointer(out), plse = logSumExp.map { SharedPointer($0) }
    parallelFor(g.batch * g.heads, cost: 4 * l * l * d) { pairs in
        let kt = UnsafeMutablePointer<Float>.allocate(capacity: 2 * d * l + 2 * l + 2 * d + 4)
        defer { kt.deallocate() }
        let vt = kt + d * l, row0 = vt + d * l, row1 = row0 + l, dump = row1 + l, maxima = dump + 2 * d, sums = maxima + 2
        for pair in pairs {
            let head = pair % g.heads * d, off = pair / g.heads * l * s + head, outOff = pair / g.heads * l * w + head
            kernels.k.transpose(pk + off, s, l, d, scale, kt, l, 0)
            kernels.k.transpose(pv + off, s, l, d, 1, vt, l, 0)
            for i in stride(from: 0, to: l, by: 2) {
                // an odd last row goes twice, its copy's results to scratch
                let i1 = min(i + 1, l - 1), twin = i1 == i
                let out0 = po + outOff + i * w, out1 = twin ? dump : po + outOff + i1 * w
                kernels.k.attention_score_rows(pq + off + i * s, pq + off + i1 * s, kt, l, d, row0, row1, maxima)
                kernels.k.attention_softmax_rows(row0, row1, maxima, vt, l, d, out0, out1, sums)
                if let plse {
                    plse[pair * l + i] = maxima[0] + log(sums[0])
                    if !twin { plse[pair * l + i1] = maxima[1] + log(sums[1]) }
                }
            }
        }
    }
}

/// The backward pass of `smallHeadAttentionForward`, per (batch, head), in two sweeps.
/// Over pairs of query rows: P[i, :] = exp(s q[i] K^T - logSumExp[i]), recomputed by the loop
/// that made the forward pass's scores, exponentiated in its registers
/// (`attention_probability_rows`); dP[i, :] = sum_e dO[i, e] V^T[e, :];
/// dS = P (dP - dot(P, dP)); dQ[i, e] += dot(dS[i, :], s K^T[e, :]). P and dS are kept for the
/// head, in L^2 scratch per core. Then over the whole head: dV^T = dO^T P and dK^T = s Q^T dS,
/// register-blocked sums of outer products, added into dV and dK.
func smallHeadAttentionBackward(_ g: AttentionGeometry, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>, logSumExp: UnsafePointer<Float>,
                                dout: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    let (l, w, d, scale) = (g.length, g.width, g.headDim, g.scale)
    let pq = SharedPointer(q), pk = SharedPointer(k), pv = SharedPointer(v), plse = SharedPointer(logSumExp)
    let pdo = SharedPointer(dout), pdq = SharedPointer(dq), pdk = SharedPointer(dk), pdv = SharedPointer(dv)
    parallelFor(g.batch * g.heads, cost: 10 * l * l * d) { pairs in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * d * l + 2 * l * l + 2 * d + 4)
        defer { scratch.deallocate() }
        let kt = scratch, vt = kt + d * l, t = vt + d * l, p = t + d * l, ds = p + l * l, rows = ds + l * l
        let shifts = rows + 2 * d, unused = shifts + 2  // two rows' log-sum-exps; the dP rows' maxima, not needed
        for pair in pairs {
            let off = pair / g.heads * l * w + pair % g.heads * d, lse = plse + pair * l
            kernels.k.transpose(pk + off, w, l, d, scale, kt, l, 0)
            kernels.k.transpose(pv + off, w, l, d, 1, vt, l, 0)
            for i in stride(from: 0, to: l, by: 2) {
                let i1 = min(i + 1, l - 1)  // an odd last row goes twice, onto itself
                let p0 = p + i * l, p1 = p + i1 * l, ds0 = ds + i * l, ds1 = ds + i1 * l
                shifts[0] = lse[i]; shifts[1] = lse[i1]
                kernels.k.attention_probability_rows(pq + off + i * w, pq + off + i1 * w, kt, l, d, shifts, p0, p1)
                kernels.k.attention_score_rows(pdo + off + i * w, pdo + off + i1 * w, vt, l, d, ds0, ds1, unused)
                kernels.k.softmax_backward_row(p0, ds0, l)
                if i1 != i { kernels.k.softmax_backward_row(p1, ds1, l) }
                kernels.k.attention_weighted_rows(ds0, ds1, kt, l, d, rows, rows + d)
                let dq0 = pdq + off + i * w
                for e in 0..<d { dq0[e] += rows[e] }
                if i1 != i { let dq1 = pdq + off + i1 * w; for e in 0..<d { dq1[e] += rows[d + e] } }
            }
            kernels.k.attention_outer_product_sum(pdo + off, w, p, l, l, d, l, 1, t)
            kernels.k.transpose(t, l, d, l, 1, pdv + off, w, 1)
            kernels.k.attention_outer_product_sum(pq + off, w, ds, l, l, d, l, scale, t)
            kernels.k.transpose(t, l, d, l, 1, pdk + off, w, 1)
        }
    }
}
