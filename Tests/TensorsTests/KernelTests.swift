import Testing
@testable import Tensors
import TestSupport

/// Fast kernels against their naive twins.
@Suite struct KernelTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func gemmMatchesNaive(transposes: (Bool, Bool)) {
        let (m, n, k) = (37, 29, 53)
        let a = randomTensor(transposes.0 ? [k, m] : [m, k], seed: 1)
        let b = randomTensor(transposes.1 ? [n, k] : [k, n], seed: 2)
        let c0 = randomTensor([m, n], seed: 3)
        let fast = c0.copy(), slow = c0.copy()
        for (c, f) in [(fast, gemm), (slow, gemmNaive)] as [(Tensor, GemmFunction)] {
            f(transposes.0, transposes.1, m, n, k, 0.5, a.pointer, transposes.0 ? m : k,
              b.pointer, transposes.1 ? k : n, 2, c.pointer, n)
        }
        #expect(maxAbsDifference(fast, slow) < 1e-4)
    }

    /// Winograd's small products (every kernel set) against the naive sgemm: row counts that leave
    /// each partial row block (1-5 of 6) after one or more whole ones, and column counts that leave
    /// an 8-column tail after the 2-vector panels of each set; leading dimensions wider than the
    /// operands, and B packed in panels by the set's own `pack_panels`.
    @Test(arguments: [(13, 8, 5), (6, 24, 32), (11, 40, 17), (4, 72, 64), (1, 16, 3), (20, 136, 9), (22, 32, 4),
                      (9, 16, 3), (7, 8, 2), (15, 24, 6), (17, 48, 10), (14, 8, 5), (36, 40, 7)])
    func smallGemmMatchesNaive(m: Int, n: Int, k: Int) {
        let (lda, ldb, ldc) = (k + 3, n + 8, n + 16)
        let a = randomTensor([m, lda], seed: 4), b = randomTensor([k, ldb], seed: 5)
        let expected = Tensor(zeros: [m, ldc])
        gemmNaive(m: m, n: n, k: k, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, c: expected.pointer, ldc: ldc)
        for kernels in KernelSet.available {
            let c = Tensor(zeros: [m, ldc]), panels = Tensor(zeros: [k, n])
            kernels.k.pack_panels(b.pointer, ldb, k, n, panels.pointer)
            kernels.k.small_gemm(m, n, k, a.pointer, lda, panels.pointer, c.pointer, ldc)
            #expect(maxAbsDifference(c, expected) < 1e-4, "\(kernels)")
        }
    }

    typealias GemmFunction = (Bool, Bool, Int, Int, Int, Float, UnsafePointer<Float>, Int, UnsafePointer<Float>, Int,
                              Float, UnsafeMutablePointer<Float>, Int) -> Void

    @Test(arguments: [
        ConvGeometry(batch: 3, channels: 5, height: 9, width: 7, outChannels: 4, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 2, channels: 3, height: 8, width: 8, outChannels: 6, kernel: 3, stride: 2, padding: 1),
        ConvGeometry(batch: 2, channels: 3, height: 8, width: 8, outChannels: 6, kernel: 3, stride: 2,
                     padTop: 0, padLeft: 0, padBottom: 1, padRight: 1),
        ConvGeometry(batch: 4, channels: 6, height: 5, width: 5, outChannels: 3, kernel: 1),
        ConvGeometry(batch: 1, channels: 6, height: 5, width: 5, outChannels: 3, kernel: 1),
        // large enough that the batch is split into several im2col chunks
        ConvGeometry(batch: 6, channels: 64, height: 28, width: 28, outChannels: 8, kernel: 3, stride: 1, padding: 1),
        // the direct kernel's edges: one input channel, one output, planes narrower than a vector
        ConvGeometry(batch: 2, channels: 1, height: 6, width: 3, outChannels: 5, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 1, channels: 7, height: 1, width: 1, outChannels: 1, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 3, channels: 6, height: 14, width: 14, outChannels: 7, kernel: 3, stride: 1, padding: 1),
        // small planes of 8 images side by side, the last group partial
        ConvGeometry(batch: 11, channels: 5, height: 7, width: 7, outChannels: 6, kernel: 3, stride: 1, padding: 1),
        // Winograd's channels-last copy: a block of 8 channels and 4 more, rows of 11 (a whole block
        // and a ragged end) and of 5 (narrower than a block)
        ConvGeometry(batch: 2, channels: 12, height: 9, width: 11, outChannels: 5, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 2, channels: 16, height: 6, width: 5, outChannels: 5, kernel: 3, stride: 1, padding: 1),
    ])
    func convMatchesNaive(g: ConvGeometry) {
        let x = randomTensor([g.batch, g.channels, g.height, g.width], seed: 4)
        let w = randomTensor([g.outChannels, g.channels, g.kernelHeight, g.kernelWidth], seed: 5)
        let b = randomTensor([g.outChannels], seed: 6)
        let slow = Tensor(zeros: [g.batch, g.outChannels, g.outHeight, g.outWidth])
        conv2dNaive(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: slow.pointer)
        for kernels in KernelSet.available {
            for algorithm in ConvAlgorithm.allCases where algorithm == .columns || isDirectConv(g) {
                let fast = Tensor(zeros: slow.shape)
                conv2dForward(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: fast.pointer, algorithm: algorithm,
                              kernels: kernels)
                #expect(maxAbsDifference(fast, slow) < 1e-3, "\(algorithm) \(kernels)")
            }
        }
    }

    /// The fused adds: y += conv(x) + bias + shift[n, o], by every algorithm and kernel set, against
    /// the naive convolution plus the same adds; a batch of 3 leaves Winograd's per-image bias rows
    /// and the direct kernel's 8-image groups partial.
    @Test(arguments: [
        ConvGeometry(batch: 3, channels: 64, height: 7, width: 7, outChannels: 70, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 11, channels: 5, height: 7, width: 7, outChannels: 6, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 2, channels: 3, height: 8, width: 8, outChannels: 6, kernel: 3, stride: 2, padding: 1),
        ConvGeometry(batch: 3, channels: 9, height: 7, width: 5, outChannels: 6, kernel: 1),
        // F(2x2)'s output by four tiles at a time and one, 8 channels and 4, and a last row of one
        ConvGeometry(batch: 2, channels: 16, height: 9, width: 10, outChannels: 12, kernel: 3, stride: 1, padding: 1),
    ])
    func convShiftAndResidual(g: ConvGeometry) {
        let x = randomTensor([g.batch, g.channels, g.height, g.width], seed: 13)
        let w = randomTensor([g.outChannels, g.channels, g.kernelHeight, g.kernelWidth], seed: 14)
        let b = randomTensor([g.outChannels], seed: 15)
        let shift = randomTensor([g.batch, g.outChannels], seed: 16)
        let residual = randomTensor([g.batch, g.outChannels, g.outHeight, g.outWidth], seed: 17)
        let expected = Tensor(zeros: residual.shape)
        conv2dNaive(g, x: x.pointer, weight: w.pointer, bias: b.pointer, y: expected.pointer)
        for i in 0..<expected.count { expected.pointer[i] += residual.pointer[i] + shift.pointer[i / g.outPixels] }
        for kernels in KernelSet.available {
            for algorithm in ConvAlgorithm.allCases where algorithm == .columns || isDirectConv(g) {
                let fast = residual.copy()
                conv2dForward(g, x: x.pointer, weight: w.pointer, bias: b.pointer, shift: shift.pointer, accumulate: true,
                              y: fast.pointer, algorithm: algorithm, kernels: kernels)
                #expect(maxAbsDifference(fast, expected) < 1e-3, "\(algorithm) \(kernels)")
            }
        }
    }

    /// Inside `withFrozenWeights` the prepared weights are made once and reused: the same output
    /// on the second call, and a weight changed in place is not seen (the contract), while outside
    /// the scope it is.
    @Test func frozenWeightsAreReused() {
        let g = ConvGeometry(batch: 2, channels: 64, height: 6, width: 6, outChannels: 64, kernel: 3, stride: 1, padding: 1)
        let x = randomTensor([2, 64, 6, 6], seed: 18), w = randomTensor([64, 64, 3, 3], seed: 19)
        for algorithm in [ConvAlgorithm.direct, .winograd, .winograd4x4] {
            func run() -> Tensor {
                let y = Tensor(zeros: [2, 64, 6, 6])
                conv2dForward(g, x: x.pointer, weight: w.pointer, bias: nil, y: y.pointer, algorithm: algorithm)
                return y
            }
            let original = w.copy(), cache = FrozenWeights()
            let first = withFrozenWeights(cache) { run() }
            w.pointer[0] += 1
            let second = withFrozenWeights(cache) { run() }
            #expect(maxAbsDifference(first, second) == 0, "\(algorithm)")
            #expect(maxAbsDifference(run(), first) > 1e-3, "\(algorithm)")
            w.pointer.update(from: original.pointer, count: w.count)
        }
    }

    /// The convolution's backward pass against the adjoint identity <conv(x), dy> = <x, conv^T(dy)>
    /// and a weight gradient built from the naive forward pass, by both algorithms: at a chunked
    /// size, and at odd sizes that leave partial channel blocks.
    @Test(arguments: [
        ConvGeometry(batch: 5, channels: 64, height: 28, width: 28, outChannels: 4, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 3, channels: 5, height: 7, width: 9, outChannels: 6, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 9, channels: 2, height: 3, width: 2, outChannels: 1, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 10, channels: 3, height: 7, width: 7, outChannels: 5, kernel: 3, stride: 1, padding: 1),
        ConvGeometry(batch: 4, channels: 96, height: 16, width: 16, outChannels: 72, kernel: 3, stride: 1, padding: 1),
    ], ConvAlgorithm.allCases)
    func convBackward(g: ConvGeometry, algorithm: ConvAlgorithm) {
        for kernels in KernelSet.available { convBackward(g: g, algorithm: algorithm, kernels: kernels) }
    }

    /// Strided convolutions go through the column matrix: the U-Net's downsampler (stride 2,
    /// padding 1), padding on one side only, and a stride with no fast path of its own.
    @Test(arguments: [
        ConvGeometry(batch: 3, channels: 5, height: 9, width: 10, outChannels: 6, kernel: 3, stride: 2, padding: 1),
        ConvGeometry(batch: 2, channels: 4, height: 14, width: 14, outChannels: 3, kernel: 3, stride: 2,
                     padTop: 0, padLeft: 0, padBottom: 1, padRight: 1),
        ConvGeometry(batch: 2, channels: 3, height: 11, width: 13, outChannels: 4, kernel: 3, stride: 3, padding: 2),
    ])
    func stridedConvBackward(g: ConvGeometry) {
        for kernels in KernelSet.available { convBackward(g: g, algorithm: .columns, kernels: kernels) }
    }

    /// 1x1 convolutions take no column matrix (each image is its own): a batch split across both
    /// cores, a single image whose products split instead, and 7x7 planes (49 columns).
    @Test(arguments: [
        ConvGeometry(batch: 5, channels: 96, height: 28, width: 28, outChannels: 32, kernel: 1),
        ConvGeometry(batch: 1, channels: 40, height: 9, width: 11, outChannels: 24, kernel: 1),
        ConvGeometry(batch: 4, channels: 256, height: 7, width: 7, outChannels: 128, kernel: 1),
    ])
    func pointwiseConvBackward(g: ConvGeometry) {
        #expect(g.isPointwise)
        for kernels in KernelSet.available { convBackward(g: g, algorithm: .columns, kernels: kernels) }
    }

    func convBackward(g: ConvGeometry, algorithm: ConvAlgorithm, kernels: KernelSet) {
        let (n, c, o, h, w) = (g.batch, g.channels, g.outChannels, g.height, g.width)
        let x = randomTensor([n, c, h, w], seed: 7)
        let weight = randomTensor([o, c, g.kernelHeight, g.kernelWidth], seed: 8)
        let dy = randomTensor([n, o, g.outHeight, g.outWidth], seed: 9)
        let y = Tensor(zeros: dy.shape)
        conv2dNaive(g, x: x.pointer, weight: weight.pointer, bias: nil, y: y.pointer)
        let dx = Tensor(zeros: x.shape), dw = Tensor(zeros: weight.shape), db = Tensor(zeros: [o])
        conv2dBackward(g, x: x.pointer, weight: weight.pointer, dy: dy.pointer, dx: dx.pointer,
                       dweight: dw.pointer, dbias: db.pointer, algorithm: algorithm, kernels: kernels)
        func dot(_ a: Tensor, _ b: Tensor) -> Double { (0..<a.count).reduce(0.0) { $0 + Double(a.pointer[$1]) * Double(b.pointer[$1]) } }
        let lhs = dot(y, dy), rhs = dot(x, dx), rhsW = dot(weight, dw)
        #expect(abs(lhs - rhs) < 1e-4 * abs(lhs) + 1e-2, "\(kernels)")
        #expect(abs(lhs - rhsW) < 1e-4 * abs(lhs) + 1e-2, "\(kernels)")  // the conv is linear in w as well
        // dx written over whatever its buffer held (a node's first gradient) equals dx added onto zeros
        let written = Tensor(shape: x.shape, repeating: .nan)
        conv2dBackward(g, x: x.pointer, weight: weight.pointer, dy: dy.pointer, dx: written.pointer, dweight: nil,
                       dbias: nil, accumulateDx: false, algorithm: algorithm, kernels: kernels)
        #expect((0..<dx.count).allSatisfy { written.pointer[$0] == dx.pointer[$0] }, "\(algorithm) \(kernels): dx written")
        // and each weight's gradient alone, against the naive conv with that weight's unit kernel
        for k in [0, o * g.patch - 1, (o * g.patch) / 2] {
            let unit = Tensor(zeros: weight.shape), response = Tensor(zeros: dy.shape)
            unit.pointer[k] = 1
            conv2dNaive(g, x: x.pointer, weight: unit.pointer, bias: nil, y: response.pointer)
            #expect(abs(Double(dw.pointer[k]) - dot(response, dy)) < 1e-3 * (1 + abs(Double(dw.pointer[k]))))
        }
        // and the whole of dW against im2col's (BLAS in float)
        let dwColumns = Tensor(zeros: weight.shape)
        conv2dBackward(g, x: x.pointer, weight: weight.pointer, dy: dy.pointer, dx: nil, dweight: dwColumns.pointer,
                       dbias: nil, algorithm: .columns, kernels: kernels)
        let scale = (0..<dw.count).reduce(Float(0)) { max($0, abs(dwColumns.pointer[$1])) }
        #expect(maxAbsDifference(dw, dwColumns) < 1e-4 * scale, "\(kernels)")
        var sumDy: Float = 0
        let p = g.outPixels
        for image in 0..<n { for i in 0..<p { sumDy += dy.pointer[(image * o + o - 1) * p + i] } }
        #expect(abs(db.pointer[o - 1] - sumDy) < 1e-2)
    }

    // head dimensions at or below 32 take the small-head kernel, larger ones BLAS
    @Test(arguments: [(1, 7, 8), (2, 5, 4), (4, 33, 16), (1, 9, 40), (2, 17, 33)])
    func attentionMatchesNaive(shape: (heads: Int, length: Int, headDim: Int)) {
        let g = AttentionGeometry(batch: 3, length: shape.length, heads: shape.heads, headDim: shape.headDim)
        let q = randomTensor([3, g.length, shape.heads * shape.headDim], seed: 10)
        let k = randomTensor(q.shape, seed: 11), v = randomTensor(q.shape, seed: 12)
        let fast = scaledDotProductAttention(query: q, key: k, value: v, heads: shape.heads)
        let slow = Tensor(zeros: q.shape)
        attentionNaive(g, q: q.pointer, k: k.pointer, v: v.pointer, out: slow.pointer)
        #expect(maxAbsDifference(fast, slow) < 1e-5)
        for kernels in KernelSet.available {
            let out = Tensor(zeros: q.shape)
            attentionForward(g, q: q.pointer, k: k.pointer, v: v.pointer, out: out.pointer, saved: nil, kernels: kernels)
            #expect(maxAbsDifference(out, slow) < 1e-5, "\(kernels)")
        }
    }

    /// The small-head kernels against the BLAS path, at lengths that reach their vector loops and
    /// ragged tails; gradients accumulate onto what dq, dk, dv held. The small heads' backward pass
    /// recomputes the probabilities from the forward's log-sum-exps, BLAS's reads them.
    @Test(arguments: [(2, 49, 8), (1, 37, 5), (3, 20, 16), (2, 9, 8), (1, 6, 4), (1, 70, 8)])
    func smallHeadAttentionMatchesBLAS(shape: (heads: Int, length: Int, headDim: Int)) {
        let g = AttentionGeometry(batch: 2, length: shape.length, heads: shape.heads, headDim: shape.headDim)
        let q = randomTensor([2, g.length, shape.heads * shape.headDim], seed: 30)
        let k = randomTensor(q.shape, seed: 31), v = randomTensor(q.shape, seed: 32), dout = randomTensor(q.shape, seed: 33)
        var results: [[Tensor]] = []
        for small in KernelSet.available.map(Optional.some) + [nil] {  // nil: BLAS, the reference, last
            let out = Tensor(zeros: q.shape)
            let dq = randomTensor(q.shape, seed: 34), dk = randomTensor(q.shape, seed: 35), dv = randomTensor(q.shape, seed: 36)
            if let kernels = small {
                let lse = Tensor(zeros: [2, shape.heads, g.length])
                smallHeadAttentionForward(g, q: q.pointer, k: k.pointer, v: v.pointer, out: out.pointer, logSumExp: lse.pointer,
                                          kernels: kernels)
                smallHeadAttentionBackward(g, q: q.pointer, k: k.pointer, v: v.pointer, logSumExp: lse.pointer,
                                           dout: dout.pointer, dq: dq.pointer, dk: dk.pointer, dv: dv.pointer, kernels: kernels)
            } else {
                let p = Tensor(zeros: [2, shape.heads, g.length, g.length])
                blasAttentionForward(g, q: q.pointer, k: k.pointer, v: v.pointer, out: out.pointer, probabilities: p.pointer)
                blasAttentionBackward(g, q: q.pointer, k: k.pointer, v: v.pointer, probabilities: p.pointer,
                                      dout: dout.pointer, dq: dq.pointer, dk: dk.pointer, dv: dv.pointer)
            }
            results.append([out, dq, dk, dv])
        }
        for (set, result) in zip(KernelSet.available, results) {
            for (fast, reference) in zip(result, results.last!) {
                #expect(maxAbsDifference(fast, reference) < 2e-5, "\(set)")
            }
        }
    }

    /// Every set's SiLU and its gradient (through the polynomial exp) against libm in Double, over
    /// the range where sigmoid is neither 0 nor 1, at a length with a ragged tail.
    @Test func siluMatchesNaive() {
        let n = 20_011
        let x = Tensor(shape: [n], (0..<n).map { Float($0) * 0.004 - 40 })
        let dy = Tensor(shape: [n], repeating: 1)
        for kernels in KernelSet.available {
            let y = Tensor(zeros: [n]), dx = Tensor(shape: [n], repeating: 0.5)
            siluForward(x.pointer, y.pointer, count: n, kernels: kernels)
            siluBackward(x.pointer, dy.pointer, dx.pointer, count: n, kernels: kernels)
            var worstY: Float = 0, worstD: Float = 0
            for i in 0..<n {
                let (ey, ed) = siluNaive(x.pointer[i])
                worstY = max(worstY, abs(y.pointer[i] - ey) / max(abs(ey), 1e-3))
                worstD = max(worstD, abs(dx.pointer[i] - 0.5 - ed))
            }
            #expect(worstY < 2e-6 && worstD < 2e-6, "\(kernels): worst relative error of y \(worstY), of dy/dx \(worstD)")
        }
    }

    /// Dropout by every set across cores, forward and backward, equals the serial definition over
    /// the same hash; its masks drop the asked share, independently for neighbours, and differ from
    /// one call to the next.
    @Test func dropoutMatchesNaive() {
        let n = 100_003, p: Float = 0.25
        let mask = (0..<n).map { i -> Float in dropoutUniform(7, i) < p ? 0 : 1 / (1 - p) }
        let x = randomTensor([n], seed: 43), dy = randomTensor([n], seed: 44)
        for kernels in KernelSet.available {
            let y = Tensor(zeros: [n]), dx = Tensor(shape: [n], repeating: 0.5)
            dropoutForward(x.pointer, p: p, key: 7, y.pointer, count: n, kernels: kernels)
            dropoutBackward(dy.pointer, p: p, key: 7, dx.pointer, count: n, kernels: kernels)
            let wrong = (0..<n).filter { y.pointer[$0] != x.pointer[$0] * mask[$0] || dx.pointer[$0] != 0.5 + dy.pointer[$0] * mask[$0] }
            #expect(wrong.count == 0, "\(kernels): the first that differ: \(wrong.prefix(3))")
        }
        var kept = 0, bothDropped = 0
        for i in 0..<n {
            if mask[i] != 0 { kept += 1 }
            if i % 2 == 1, mask[i] == 0, mask[i - 1] == 0 { bothDropped += 1 }
        }
        #expect(abs(Double(kept) / Double(n) - 0.75) < 0.01)
        #expect(abs(Double(bothDropped) / Double(n / 2) - 0.0625) < 0.005)
        var rng = RandomGenerator(seed: 3)
        let ones = Tensor(shape: [1000], repeating: 1)
        #expect(ones.dropout(p, using: &rng).scalars != ones.dropout(p, using: &rng).scalars)
    }

    /// Softmax rows of every set against the definition in Double, rows shorter and longer than a
    /// vector: each probability within 1e-6 of itself (the exponentials are within 2.4e-7 of exp).
    /// The reference takes x - max as float arithmetic rounds it, as every float softmax does (its
    /// rounding, |x - max| 6e-8 of the result, is the format's, not the kernels').
    @Test(arguments: [3, 16, 37, 196])
    func softmaxMatchesNaive(n: Int) {
        let x = randomTensor([5, n], seed: 40, scale: 6)
        for kernels in KernelSet.available {
            let y = x.copy()
            softmaxRows(y.pointer, rows: 5, n: n, kernels: kernels)
            for r in 0..<5 {
                let row = (0..<n).map { x.pointer[r * n + $0] }, m = row.max()!
                let e = row.map { Foundation.exp(Double($0 - m)) }, total = e.reduce(0, +)
                for j in 0..<n {
                    let p = e[j] / total
                    #expect(abs(Double(y.pointer[r * n + j]) - p) <= 1e-6 * p, "\(kernels)")
                }
            }
        }
    }

    /// Column sums by every set, added onto what the accumulator holds, against Double sums: column
    /// counts below a vector, between whole blocks, and rows enough to split across cores.
    @Test(arguments: [(3, 5), (1, 17), (40, 70), (1100, 192), (2000, 65)])
    func columnSumsMatchNaive(shape: (rows: Int, columns: Int)) {
        let x = randomTensor([shape.rows, shape.columns], seed: 41)
        let start = randomTensor([shape.columns], seed: 42)
        for kernels in KernelSet.available {
            let acc = start.copy()
            addColumnSums(x.pointer, rows: shape.rows, columns: shape.columns, into: acc.pointer, kernels: kernels)
            for j in 0..<shape.columns {
                let exact = (0..<shape.rows).reduce(Double(start.pointer[j])) { $0 + Double(x.pointer[$1 * shape.columns + j]) }
                #expect(abs(Double(acc.pointer[j]) - exact) < 1e-5 * Double(shape.rows), "\(kernels) column \(j)")
            }
        }
    }

    /// The transpose kernel by every set against its definition, over strided rows and columns,
    /// written and added; and `transposeBatched`, which tiles a batch of matrices with it.
    @Test(arguments: [(3, 5), (8, 8), (13, 21), (196, 64), (40, 9)])
    func transposeMatchesDefinition(rows: Int, columns: Int) {
        let (ldx, ldy) = (columns + 3, rows + 2)
        let x = randomTensor([rows * ldx], seed: 47), start = randomTensor([columns * ldy], seed: 48)
        for kernels in KernelSet.available {
            for accumulate in [false, true] {
                let y = start.copy()
                kernels.k.transpose(x.pointer, ldx, rows, columns, 0.5, y.pointer, ldy, accumulate ? 1 : 0)
                var worst: Float = 0
                for c in 0..<columns {
                    for r in 0..<ldy {
                        let old = start.pointer[c * ldy + r]
                        let expected = r < rows ? (accumulate ? old : 0) + 0.5 * x.pointer[r * ldx + c] : old
                        worst = max(worst, abs(y.pointer[c * ldy + r] - expected))
                    }
                }
                #expect(worst < 1e-6, "\(kernels) accumulate \(accumulate)")
            }
        }
        let batch = randomTensor([3, rows, columns], seed: 49), out = Tensor(zeros: [3, columns, rows])
        transposeBatched(batch.pointer, batch: 3, rows: rows, columns: columns, out.pointer, add: false)
        let misplaced = (0..<out.count).filter { i in
            let (b, c, r) = (i / (rows * columns), i / rows % columns, i % rows)
            return out.pointer[i] != batch.pointer[(b * rows + r) * columns + c]
        }
        #expect(misplaced.isEmpty)
    }

    /// AdamW's update by every set against the Double twin, over three steps from zero moments:
    /// lengths below a vector, between whole vectors, and enough to split across cores.
    @Test(arguments: [3, 16, 37, 300_001])
    func adamWStepMatchesNaive(count: Int) {
        let start = randomTensor([count], seed: 45), g = randomTensor([count], seed: 46, scale: 3)
        for kernels in KernelSet.available {
            let p = start.copy(), m = Tensor(zeros: [count]), v = Tensor(zeros: [count])
            let q = start.copy(), mq = Tensor(zeros: [count]), vq = Tensor(zeros: [count])
            for t in 1...3 {
                let c = AdamWCoefficients(beta1: 0.9, beta2: 0.999, decay: 1 - 1e-3 * 0.1, stepSize: 1e-3 / (1 - pow(0.9, Float(t))),
                                          correction2: (1 - pow(0.999, Float(t))).squareRoot(), epsilon: 1e-8)
                adamWStep(p.pointer, gradient: g.pointer, m: m.pointer, v: v.pointer, count: count, c, kernels: kernels)
                adamWStepNaive(q.pointer, gradient: g.pointer, m: mq.pointer, v: vq.pointer, count: count, c)
            }
            #expect(maxAbsDifference(p, q) < 1e-6, "\(kernels) parameters")
            #expect(maxAbsDifference(m, mq) < 1e-6 && maxAbsDifference(v, vq) < 1e-5, "\(kernels) moments")
        }
    }

    /// GroupNorm with fused SiLU, forward and backward, by every set: all agree with the best one,
    /// and dx written over whatever its buffer held equals dx added onto zeros.
    @Test func groupNormSetsAgree() {
        let g = GroupNormGeometry(batch: 3, channels: 8, spatial: 49, groups: 4, epsilon: 1e-5)
        let x = randomTensor([3, 8, 49], seed: 41, scale: 2), dy = randomTensor([3, 8, 49], seed: 42)
        let gamma = randomTensor([8], seed: 43), beta = randomTensor([8], seed: 44)
        var results: [[Tensor]] = []
        for kernels in KernelSet.available {
            let y = Tensor(zeros: x.shape), mean = Tensor(zeros: [12]), rstd = Tensor(zeros: [12])
            let dx = Tensor(zeros: x.shape), dg = Tensor(zeros: [8]), db = Tensor(zeros: [8])
            groupNormForward(g, x: x.pointer, gamma: gamma.pointer, beta: beta.pointer, silu: true, y: y.pointer,
                             mean: mean.pointer, rstd: rstd.pointer, kernels: kernels)
            groupNormBackward(g, x: x.pointer, gamma: gamma.pointer, beta: beta.pointer, silu: true, dy: dy.pointer,
                              mean: mean.pointer, rstd: rstd.pointer, dx: dx.pointer, dgamma: dg.pointer, dbeta: db.pointer,
                              kernels: kernels)
            let written = Tensor(shape: x.shape, repeating: .nan)
            groupNormBackward(g, x: x.pointer, gamma: gamma.pointer, beta: beta.pointer, silu: true, dy: dy.pointer,
                              mean: mean.pointer, rstd: rstd.pointer, dx: written.pointer, dgamma: nil, dbeta: nil,
                              accumulateDx: false, kernels: kernels)
            #expect((0..<dx.count).allSatisfy { written.pointer[$0] == dx.pointer[$0] }, "\(kernels): dx written")
            results.append([y, dx, dg, db])
        }
        for (set, result) in zip(KernelSet.available, results) {
            for (a, b) in zip(result, results[0]) { #expect(maxAbsDifference(a, b) < 1e-5, "\(set)") }
        }
    }

    /// OpenBLAS runs the kernel this CPU's features call for (SkylakeX with AVX-512, Haswell with
    /// AVX2), not a generic fallback, unless the user chose one.
    @Test func blasCoreMatchesCPU() {
        print("OpenBLAS core: \(BLAS.core) (\(BLAS.coreReason)); kernel sets: \(KernelSet.available)")
        if BLAS.coreReason.hasPrefix("set by OPENBLAS_CORETYPE") { return }  // the user's choice (CLITests check it is kept)
        let expected = ["avx512": "SkylakeX", "avx2+fma": "Haswell"][KernelSet.available[0].name]
        if let expected { #expect(BLAS.core == expected) }
    }

    /// Every set's peak loop runs and reports a plausible rate.
    @Test func peakLoops() {
        for kernels in KernelSet.available {
            let gflops = kernels.measuredPeakPerCore()
            #expect(gflops > 1 && gflops < 1000, "\(kernels): \(gflops) GFLOP/s")
        }
    }

    @Test func broadcastPlanMergesAndRejects() {
        #expect(BroadcastPlan([2, 3, 4], [3, 5]) == nil)
        #expect(BroadcastPlan([2, 3, 4, 5], [2, 3, 1, 1])?.shape == [2, 3, 4, 5])
        #expect(BroadcastPlan([3, 1], [1, 4])?.shape == [3, 4])
    }

    @Test func groupNormMatchesDefinition() {
        let x = randomTensor([2, 4, 3, 3], seed: 13, scale: 3) + 5
        let gamma = randomTensor([4], seed: 14), beta = randomTensor([4], seed: 15)
        let y = x.groupNorm(groups: 2, gamma: gamma, beta: beta, epsilon: 1e-5)
        for n in 0..<2 {
            for g in 0..<2 {
                let idx = (0..<18).map { (n * 4 + g * 2) * 9 + $0 }
                let vals = idx.map { Double(x.pointer[$0]) }
                let mean = vals.reduce(0, +) / 18
                let variance = vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 18
                for (j, i) in idx.enumerated() {
                    let c = g * 2 + j / 9
                    let expected = (vals[j] - mean) / (variance + 1e-5).squareRoot() * Double(gamma.pointer[c]) + Double(beta.pointer[c])
                    #expect(abs(Double(y.pointer[i]) - expected) < 1e-5)
                }
            }
        }
    }
}

import Foundation

/// The thread pool: every index runs exactly once, whether loops come one after another (the
/// workers catch them spinning, or asleep after a pause), nested in a loop's body, or from
/// several threads at once (one holds the pool, the others go to libdispatch).
@Suite struct ParallelTests {
    final class Counts: @unchecked Sendable {
        let count: Int, pointer: UnsafeMutablePointer<Int>
        init(_ count: Int) {
            self.count = count
            pointer = .allocate(capacity: count)
            pointer.initialize(repeating: 0, count: count)
        }
        deinit { pointer.deallocate() }
        var all: [Int] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    }

    @Test func everyIndexRunsOnce() {
        let rounds = 2000, counts = Counts(rounds * 8)
        for round in 0..<rounds {
            parallelRun(1 + round % 8) { i in counts.pointer[round * 8 + i] += 1 }
            if round == rounds / 2 { usleep(300_000) }  // long enough for the workers to fall asleep
        }
        #expect(counts.all == (0..<rounds * 8).map { $0 % 8 <= $0 / 8 % 8 ? 1 : 0 })
    }

    /// parallelFor's chunks (inline, one per core, or up to four per core) cover each index once.
    @Test(arguments: [(1, 1), (7, 1 << 20), (1000, 1), (1000, 1 << 12), (100_003, 64), (3, 1 << 18)])
    func parallelForCoversEveryIndexOnce(count: Int, cost: Int) {
        let counts = Counts(count)
        parallelFor(count, cost: cost) { range in for i in range { counts.pointer[i] += 1 } }
        #expect(counts.all == Array(repeating: 1, count: count))
    }

    /// Claims hands out each piece once, however many threads ask at once.
    @Test func claimsHandOutEachPieceOnce() {
        let counts = Counts(10_000), claims = Claims(10_000)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            while let i = claims.claim() { counts.pointer[i] += 1 }
        }
        #expect(counts.all == Array(repeating: 1, count: 10_000))
        #expect(claims.claim() == nil)
    }

    @Test func nestedAndConcurrentLoopsComplete() {
        let counts = Counts(16)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for _ in 0..<200 {
                parallelRun(2) { outer in
                    parallelRun(2) { inner in counts.pointer[caller * 4 + outer * 2 + inner] += 1 }
                }
            }
        }
        #expect(counts.all == Array(repeating: 200, count: 16))
    }
}
