import Foundation

/// Elementwise kernels, split across cores when large: plain scalar loops over raw pointers, which
/// the compiler vectorises (memory-bound: SSE does as well as AVX here), and, from the active
/// kernel set, SiLU (whose polynomial exp wants FMA and wide vectors), AdamW's update (a square
/// root and a division per parameter) and dropout (a 64-bit hash per element).

/// p[i] = value, i < count. Zeros by memset, whose large fills store without reading the lines
/// first (a loop of vector stores took 1.7x the cycles: perf samples against small_gemm's, fmnist
/// training).
public func fill(_ p: UnsafeMutablePointer<Float>, with value: Float, count: Int) {
    let d = SharedPointer(p)
    parallelFor(count) { r in
        if value == 0 { memset(d + r.lowerBound, 0, r.count * 4) } else { (d + r.lowerBound).update(repeating: value, count: r.count) }
    }
}

/// dst[i] = src[i], i < count.
public func copy(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, count: Int) {
    let d = SharedPointer(dst), s = SharedPointer(src)
    parallelFor(count) { r in (d + r.lowerBound).update(from: s + r.lowerBound, count: r.count) }
}

/// dst[i] += scale * src[i], i < count.
public func accumulate(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>,
                       scale: Float = 1, count: Int) {
    let d = SharedPointer(dst), s = SharedPointer(src)
    parallelFor(count) { r in
        if scale == 1 {
            for i in r { d[i] += s[i] }
        } else {
            for i in r { d[i] += scale * s[i] }
        }
    }
}

/// y = x * scale + shift.
public func affineForward(_ x: UnsafePointer<Float>, scale: Float, shift: Float,
                          _ y: UnsafeMutablePointer<Float>, count: Int) {
    let xs = SharedPointer(x), ys = SharedPointer(y)
    parallelFor(count) { r in for i in r { ys[i] = xs[i] * scale + shift } }
}

/// y = x * sigmoid(x).
public func siluForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int,
                        kernels: KernelSet = .active) {
    let xs = SharedPointer(x), ys = SharedPointer(y)
    parallelFor(count, cost: 8) { r in kernels.k.silu_affine(xs + r.lowerBound, 1, 0, ys + r.lowerBound, r.count) }
}

/// dx += dy * s (1 + x (1 - s)), s = sigmoid(x).
public func siluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>, count: Int, kernels: KernelSet = .active) {
    let xs = SharedPointer(x), gs = SharedPointer(dy), ds = SharedPointer(dx)
    parallelFor(count, cost: 8) { r in
        kernels.k.silu_affine_backward(xs + r.lowerBound, 1, 0, gs + r.lowerBound, ds + r.lowerBound, r.count, 1)
    }
}

/// The naive twin of SiLU and its gradient, in Double with libm's exp: y = x sigmoid(x),
/// dydx = s (1 + x (1 - s)).
public func siluNaive(_ x: Float) -> (y: Float, dydx: Float) {
    let v = Double(x), s = 1 / (1 + Foundation.exp(-v))
    return (Float(v * s), Float(s * (1 + v * (1 - s))))
}

// MARK: - Optimiser

/// The scalars of one AdamW update with the learning rate lr and the bias corrections of step t
/// folded in: decay = 1 - lr wd, stepSize = lr / (1 - beta1^t), correction2 = sqrt(1 - beta2^t).
public struct AdamWCoefficients: Sendable {
    public var beta1, beta2, decay, stepSize, correction2, epsilon: Float
    public init(beta1: Float, beta2: Float, decay: Float, stepSize: Float, correction2: Float, epsilon: Float) {
        self.beta1 = beta1; self.beta2 = beta2; self.decay = decay
        self.stepSize = stepSize; self.correction2 = correction2; self.epsilon = epsilon
    }
}

/// One AdamW update of `count` parameters p from their gradients g, with the moments m and v:
/// m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2,
/// p = p decay - stepSize m / (sqrt(v) / correction2 + epsilon).
public func adamWStep(_ p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>,
                      m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                      _ c: AdamWCoefficients, kernels: KernelSet = .active) {
    let pp = SharedPointer(p), pg = SharedPointer(g), pm = SharedPointer(m), pv = SharedPointer(v)
    parallelFor(count, cost: 8) { r in
        let i = r.lowerBound
        kernels.k.adamw_step(pp + i, pg + i, pm + i, pv + i, r.count, c.beta1, c.beta2, c.decay, c.stepSize,
                             c.correction2, c.epsilon)
    }
}

/// The naive twin of `adamWStep`, in Double.
public func adamWStepNaive(_ p: UnsafeMutablePointer<Float>, gradient g: UnsafePointer<Float>,
                           m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int,
                           _ c: AdamWCoefficients) {
    let (b1, b2) = (Double(c.beta1), Double(c.beta2))
    for i in 0..<count {
        let gi = Double(g[i])
        let mi = b1 * Double(m[i]) + (1 - b1) * gi, vi = b2 * Double(v[i]) + (1 - b2) * gi * gi
        m[i] = Float(mi); v[i] = Float(vi)
        p[i] = Float(Double(p[i]) * Double(c.decay)
                     - Double(c.stepSize) * mi / (vi.squareRoot() / Double(c.correction2) + Double(c.epsilon)))
    }
}

// MARK: - Dropout

/// Inverted dropout: y = x * mask, where mask[i] = 0 with probability p, else 1 / (1 - p). Element
/// i's uniform is word i of a SplitMix64 stream seeded by `key` (`dropoutUniform`), computed on its
/// own, so the mask is the same however the elements are split across cores and whichever kernel
/// set hashes them, and the backward pass hashes it again instead of keeping it.
public func dropoutForward(_ x: UnsafePointer<Float>, p: Float, key: UInt64, _ y: UnsafeMutablePointer<Float>,
                           count: Int, kernels: KernelSet = .active) {
    let xs = SharedPointer(x), ys = SharedPointer(y)
    parallelFor(count, cost: 8) { r in kernels.k.dropout(xs + r.lowerBound, p, key, r.lowerBound, ys + r.lowerBound, r.count, 0) }
}

/// dx += dy * mask, the mask of `dropoutForward` under the same p and key.
public func dropoutBackward(_ dy: UnsafePointer<Float>, p: Float, key: UInt64, _ dx: UnsafeMutablePointer<Float>,
                            count: Int, kernels: KernelSet = .active) {
    let gs = SharedPointer(dy), ds = SharedPointer(dx)
    parallelFor(count, cost: 8) { r in kernels.k.dropout(gs + r.lowerBound, p, key, r.lowerBound, ds + r.lowerBound, r.count, 1) }
}

/// Element i's uniform in [0, 1) under `key`, 24 random bits.
@inline(__always)
func dropoutUniform(_ key: UInt64, _ i: Int) -> Float {
    Float(RandomGenerator.splitMix64(key, i) >> 40) * 0x1p-24
}

// MARK: - Broadcasting

public enum BinaryOperator: Sendable { case add, subtract, multiply }

/// How two shapes broadcast (NumPy rules, right-aligned), with dimensions that move together
/// merged, so the innermost loop is as long as possible. Strides are 0 along broadcast dimensions.
public struct BroadcastPlan: Sendable {
    public let shape: [Int]
    /// Merged dimensions, outermost first, and each operand's stride along them.
    let sizes: [Int], stridesA: [Int], stridesB: [Int]

    public init?(_ a: [Int], _ b: [Int]) {
        let rank = max(a.count, b.count)
        let pa = Array(repeating: 1, count: rank - a.count) + a
        let pb = Array(repeating: 1, count: rank - b.count) + b
        var shape: [Int] = []
        for (x, y) in zip(pa, pb) {
            guard x == y || x == 1 || y == 1 else { return nil }
            shape.append(max(x, y))
        }
        func strides(_ p: [Int]) -> [Int] {
            var s = Array(repeating: 0, count: rank), run = 1
            for d in stride(from: rank - 1, through: 0, by: -1) {
                s[d] = p[d] == 1 && shape[d] != 1 ? 0 : run
                run *= p[d]
            }
            return s
        }
        let sa = strides(pa), sb = strides(pb)
        var sizes: [Int] = [], ma: [Int] = [], mb: [Int] = []
        for d in 0..<rank where shape[d] != 1 {
            if let last = sizes.last,
               ma.last! == sa[d] * shape[d] || (ma.last! == 0 && sa[d] == 0),
               mb.last! == sb[d] * shape[d] || (mb.last! == 0 && sb[d] == 0) {
                sizes[sizes.count - 1] = last * shape[d]
                ma[ma.count - 1] = sa[d]
                mb[mb.count - 1] = sb[d]
            } else {
                sizes.append(shape[d]); ma.append(sa[d]); mb.append(sb[d])
            }
        }
        if sizes.isEmpty { sizes = [1]; ma = [1]; mb = [1] }
        self.shape = shape
        self.sizes = sizes
        self.stridesA = ma
        self.stridesB = mb
    }

    var inner: Int { sizes.last! }
    var rows: Int { sizes.dropLast().reduce(1, *) }

    /// Offsets into A and B of the first element of outer row `row`.
    @inline(__always)
    func offsets(row: Int) -> (Int, Int) {
        var r = row, oa = 0, ob = 0
        var d = sizes.count - 2
        while d >= 0 {
            let i = r % sizes[d]
            r /= sizes[d]
            oa += i * stridesA[d]
            ob += i * stridesB[d]
            d -= 1
        }
        return (oa, ob)
    }
}

/// out = a (op) b under `plan`.
public func broadcastForward(_ op: BinaryOperator, _ plan: BroadcastPlan, _ a: UnsafePointer<Float>,
                             _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
    let n = plan.inner, ia = plan.stridesA.last!, ib = plan.stridesB.last!
    let pa = SharedPointer(a), pb = SharedPointer(b), po = SharedPointer(out)
    parallelFor(plan.rows, cost: n) { rows in
        for row in rows {
            let (oa, ob) = plan.offsets(row: row)
            let x = pa + oa, y = pb + ob, z = po + row * n
            switch (op, ia, ib) {
            case (.add, 1, 1): for i in 0..<n { z[i] = x[i] + y[i] }
            case (.add, 1, _): let v = y[0]; for i in 0..<n { z[i] = x[i] + v }
            case (.add, _, _): let v = x[0]; for i in 0..<n { z[i] = v + y[i] }
            case (.subtract, 1, 1): for i in 0..<n { z[i] = x[i] - y[i] }
            case (.subtract, 1, _): let v = y[0]; for i in 0..<n { z[i] = x[i] - v }
            case (.subtract, _, _): let v = x[0]; for i in 0..<n { z[i] = v - y[i] }
            case (.multiply, 1, 1): for i in 0..<n { z[i] = x[i] * y[i] }
            case (.multiply, 1, _): let v = y[0]; for i in 0..<n { z[i] = x[i] * v }
            case (.multiply, _, _): let v = x[0]; for i in 0..<n { z[i] = v * y[i] }
            }
        }
    }
}

/// The gradient of one operand of a broadcast op, summed over the dimensions it was broadcast
/// along: sink[index of `plan`'s operand] += scale * g * (factor[index of the other operand], or 1).
/// `operandIsA` chooses which operand receives. Serial when the sink is broadcast (rows would
/// collide), parallel otherwise.
public func broadcastBackward(_ plan: BroadcastPlan, operandIsA: Bool, scale: Float,
                              _ g: UnsafePointer<Float>, factor: UnsafePointer<Float>?,
                              _ sink: UnsafeMutablePointer<Float>) {
    let n = plan.inner
    let sinkStrides = operandIsA ? plan.stridesA : plan.stridesB
    let inner = sinkStrides.last!, otherInner = (operandIsA ? plan.stridesB : plan.stridesA).last!
    let full = sinkStrides.last! == 1 && zip(plan.sizes.indices.dropLast(), sinkStrides).allSatisfy { d, s in
        s == plan.sizes[(d + 1)...].reduce(1, *)
    }
    let pg = SharedPointer(g), ps = SharedPointer(sink)
    let pf = factor.map { SharedPointer($0) }
    let work: @Sendable (Range<Int>) -> Void = { rows in
        for row in rows {
            let (oa, ob) = plan.offsets(row: row)
            let so = operandIsA ? oa : ob, fo = operandIsA ? ob : oa
            let gr = pg + row * n, s = ps + so
            if let pf {
                let f = pf + fo
                switch (inner, otherInner) {
                case (1, 1): for i in 0..<n { s[i] += scale * gr[i] * f[i] }
                case (1, _): let v = scale * f[0]; for i in 0..<n { s[i] += v * gr[i] }
                case (_, 1): s[0] += scale * dot(gr, f, count: n)
                default: s[0] += scale * f[0] * sum(gr, count: n)
                }
            } else if inner == 1 {
                for i in 0..<n { s[i] += scale * gr[i] }
            } else {
                s[0] += scale * sum(gr, count: n)
            }
        }
    }
    if full { parallelFor(plan.rows, cost: n, work) } else { work(0..<plan.rows) }
}
