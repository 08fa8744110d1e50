import CKernels
import Dispatch

/// 2-D convolution as im2col + one sgemm per chunk of images, with the naive direct twin.
///
/// Shapes: x [N, C, H, W], weight [O, C, kh, kw] (OIHW, as PyTorch), bias [O], y [N, O, Ho, Wo],
/// Ho = (H + top + bottom - kh) / stride + 1, likewise Wo.
///
/// The column matrix of a chunk of `nb` images is [C kh kw, nb Ho Wo]: row (c, i, j) holds, for
/// each output pixel of each image, the input pixel under kernel tap (i, j) of channel c (0 in the
/// padding). Then y_chunk [O, nb Ho Wo] = weight [O, C kh kw] x columns, scattered back to NCHW.

public struct ConvGeometry: Sendable, Hashable {
    public var batch, channels, height, width: Int
    public var outChannels, kernelHeight, kernelWidth, stride: Int
    public var padTop, padLeft, padBottom, padRight: Int

    public init(batch: Int, channels: Int, height: Int, width: Int, outChannels: Int,
                kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.init(batch: batch, channels: channels, height: height, width: width,
                  outChannels: outChannels, kernel: kernel, stride: stride,
                  padTop: padding, padLeft: padding, padBottom: padding, padRight: padding)
    }

    public init(batch: Int, channels: Int, height: Int, width: Int, outChannels: Int,
                kernel: Int, stride: Int, padTop: Int, padLeft: Int, padBottom: Int, padRight: Int) {
        self.batch = batch; self.channels = channels; self.height = height; self.width = width
        self.outChannels = outChannels; self.kernelHeight = kernel; self.kernelWidth = kernel
        self.stride = stride
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
    }

    public var outHeight: Int { (height + padTop + padBottom - kernelHeight) / stride + 1 }
    public var outWidth: Int { (width + padLeft + padRight - kernelWidth) / stride + 1 }
    /// Rows of the column matrix: C kh kw.
    public var patch: Int { channels * kernelHeight * kernelWidth }
    public var outPixels: Int { outHeight * outWidth }
    /// A 1x1 kernel at stride 1 without padding: each image is its own column matrix.
    public var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && stride == 1 && padTop + padLeft + padBottom + padRight == 0
    }
    /// Multiply-adds x 2 of the forward pass.
    public var flops: Double { 2 * Double(batch * outChannels * outPixels * patch) }
}

extension ConvGeometry {
    /// Where one input plane's pixels go in the column matrix, for the kernel set's im2col.
    var patches: ddpm_patches {
        ddpm_patches(height: height, width: width, kernel_height: kernelHeight, kernel_width: kernelWidth,
                     stride: stride, pad_top: padTop, pad_left: padLeft, out_height: outHeight, out_width: outWidth)
    }
}

/// Fills columns [C kh kw, nb Ho Wo] from images n0 ..< n0 + nb of x: each (channel, image)
/// plane's kh kw rows by the kernel set.
func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, n0: Int, nb: Int,
            _ columns: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    var patches = g.patches
    let plane = g.height * g.width, width = nb * g.outPixels, taps = g.kernelHeight * g.kernelWidth
    for c in 0..<g.channels {
        for img in 0..<nb {
            kernels.k.im2col_plane(x + ((n0 + img) * g.channels + c) * plane, &patches,
                                   columns + c * taps * width + img * g.outPixels, width)
        }
    }
}

/// dx[images n0 ..< n0 + nb] += the column gradient folded back onto the input: the adjoint of im2col.
func col2im(_ g: ConvGeometry, _ columns: UnsafePointer<Float>, n0: Int, nb: Int,
            _ dx: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    var patches = g.patches
    let plane = g.height * g.width, width = nb * g.outPixels, taps = g.kernelHeight * g.kernelWidth
    for c in 0..<g.channels {
        for img in 0..<nb {
            kernels.k.col2im_plane(columns + c * taps * width + img * g.outPixels, width, &patches,
                                   dx + ((n0 + img) * g.channels + c) * plane)
        }
    }
}

/// How a convolution's batch is split: chunks of `chunk` consecutive images, so that a chunk's
/// column matrix (about 1 MB) stays in cache between im2col and sgemm, which the cores claim in
/// turn; or, where each core sums its own weight gradient, `workers` fixed groups of consecutive
/// images, one per core, taken a chunk at a time. A single image goes to one worker whose products
/// split across cores.
struct ConvPlan {
    let workers: Int, chunk: Int
    init(_ g: ConvGeometry) {
        workers = min(kernelThreads, g.batch)
        let perImage = g.patch * g.outPixels
        chunk = max(1, min((g.batch + workers - 1) / workers, (1 << 18) / max(1, perImage)))
    }
    func images(of worker: Int, batch: Int) -> Range<Int> { batch * worker / workers ..< batch * (worker + 1) / workers }

    /// Runs body(worker) on each worker (for passes that sum per worker, which a fixed split keeps
    /// deterministic).
    func run(_ body: @Sendable (Int) -> Void) {
        if workers == 1 { return body(0) }
        parallelRun(workers, body)
    }

    /// Runs body(images) on chunks of `chunk` consecutive images, which the cores claim in turn
    /// (for passes whose images are independent: a core that falls behind takes fewer).
    func forEachChunk(batch: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let size = chunk
        if workers == 1 { return stride(from: 0, to: batch, by: size).forEach { body($0 ..< min(batch, $0 + size)) } }
        parallelRun((batch + size - 1) / size) { c in body(c * size ..< min(batch, (c + 1) * size)) }
    }

    /// The product for a worker's chunk: split across cores only when there is one worker.
    func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
              beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let product = workers == 1 ? parallelGemm : Tensors.gemm
        product(transposeA, transposeB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
    }
}

/// The ways a convolution is computed: im2col + sgemm (any geometry), or, for 3x3, stride 1,
/// padding 1, directly on bordered planes (DirectConv.swift) or by Winograd's F(2x2, 3x3) or
/// F(4x4, 3x3) (WinogradConv.swift).
public enum ConvAlgorithm: String, Sendable, CaseIterable {
    case columns, direct, winograd, winograd4x4

    /// Whichever measured faster (`ddpm bench --ops --only conv --preset NAME` times a preset's own
    /// shapes with each algorithm and sums how far this choice is from the fastest per shape).
    ///
    /// Winograd from 32 channels and 4 pixels wide, when the batch gives each core an image: F(4x4)
    /// where two things hold, else F(2x2). Its tiles, padding included, take fewer multiplies than
    /// F(2x2)'s (36 per 16 outputs against 16 per 4: at every size from 3 but 5 and 6). And each core
    /// has at least one of its tiles per 16 channels (of the larger side), so that each transformed
    /// kernel it reads from memory serves enough tiles. Below 32 channels, or with fewer images than
    /// cores (Winograd splits the batch by images), the direct kernel from 7 pixels up (10-60% faster
    /// than im2col there), im2col under that and on planes under 4 wide. Evidence, on Zen 5 (family
    /// 26), from `ddpm bench --ops --only conv` twice each: F(4x4) beat F(2x2) at 14x14 on fmnist,
    /// batch 64 (1.2-1.7x forward, 1.1-1.5x backward), and at 8x8 with 256 channels and 8 tiles per
    /// core (cifar10, batch 16: 1.8x forward, even backward); with one tile per 32 channels (4x4, 256)
    /// it tied forward and lost backward by 1.75x, at one per 64 by 1.7x both ways. Winograd beat
    /// im2col at 4x4 (1.3-2.2x forward, 1.1-1.3x backward). The rule before this one (F(4x4) only where
    /// each side's half is even, from one tile per 4 channels, nothing under 7 pixels) was 87-88% of
    /// the fastest per shape forward on both presets once Winograd's planes stopped sharing cache sets,
    /// which had made F(4x4) at 14x14 1.3-1.5x slower than F(2x2).
    public static func best(for g: ConvGeometry) -> ConvAlgorithm {
        guard isDirectConv(g) else { return .columns }
        let channels = min(g.channels, g.outChannels)
        guard g.batch >= kernelThreads, channels >= 32 else { return g.width >= 7 ? .direct : .columns }
        guard g.width >= 4 else { return .columns }
        let (tilesY, tilesX) = ((g.height + 3) / 4, (g.width + 3) / 4)
        let tilesPerCore = (g.batch + kernelThreads - 1) / kernelThreads * tilesY * tilesX
        let fewerMultiplies = 36 * tilesY * tilesX < 16 * ((g.height + 1) / 2) * ((g.width + 1) / 2)
        return fewerMultiplies && 16 * tilesPerCore >= max(g.channels, g.outChannels) ? .winograd4x4 : .winograd
    }

    /// The tile of the two Winograd algorithms.
    var winogradTile: WinogradTile { self == .winograd4x4 ? .f4 : .f2 }
}

/// y = conv(x, weight) + bias + shift, or y += that when `accumulate`, with the bias [O] and the
/// shift [N, O] (per image and channel: a projected time embedding) optional. The adds happen in
/// the pass that writes y, so a layer's bias, time embedding and residual cost no pass of their own.
public func conv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>? = nil, accumulate: Bool = false,
                          y: UnsafeMutablePointer<Float>, algorithm: ConvAlgorithm? = nil, kernels: KernelSet = .active) {
    let chosen = algorithm ?? .best(for: g)
    switch chosen {
    case .direct:
        directConv2dForward(g, x: x, weight: weight, bias: bias, shift: shift, accumulate: accumulate, y: y, kernels: kernels)
    case .winograd, .winograd4x4:
        winogradConv2dForward(g, x: x, weight: weight, bias: bias, shift: shift, accumulate: accumulate, y: y,
                              tile: chosen.winogradTile, kernels: kernels)
    case .columns:
        columnsConv2dForward(g, x: x, weight: weight, bias: bias, shift: shift, accumulate: accumulate, y: y,
                             kernels: kernels)
    }
}

/// Given dy, adds dL/dx (when dx is non-nil; writes it over whatever dx holds when `accumulateDx`
/// is false), dL/dweight and dL/dbias into their buffers.
public func conv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                           dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                           accumulateDx: Bool = true, algorithm: ConvAlgorithm? = nil, kernels: KernelSet = .active) {
    let chosen = algorithm ?? .best(for: g)
    switch chosen {
    case .direct:
        directConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias,
                             accumulateDx: accumulateDx, kernels: kernels)
    case .winograd, .winograd4x4:
        winogradConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias,
                               accumulateDx: accumulateDx, tile: chosen.winogradTile, kernels: kernels)
    case .columns:
        // col2im adds its columns into dx, which must start at zero
        if let dx, !accumulateDx { fill(dx, with: 0, count: g.batch * g.channels * g.height * g.width) }
        columnsConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias, kernels: kernels)
    }
}

func columnsConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                          y: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    if g.isPointwise {
        return pointwiseConv2dForward(g, x: x, weight: weight, bias: bias, shift: shift, accumulate: accumulate, y: y)
    }
    let plan = ConvPlan(g), p = g.outPixels
    let px = SharedPointer(x), pw = SharedPointer(weight), py = SharedPointer(y)
    let pb = bias.map { SharedPointer($0) }, ps = shift.map { SharedPointer($0) }
    plan.forEachChunk(batch: g.batch) { images in
        let n0 = images.lowerBound, nb = images.count, width = nb * p
        let columns = Storage(uninitializedCount: g.patch * width)
        let product = Storage(uninitializedCount: g.outChannels * width)
        im2col(g, px.base, n0: n0, nb: nb, columns.pointer, kernels: kernels)
        plan.gemm(m: g.outChannels, n: width, k: g.patch, a: pw.base, lda: g.patch, b: columns.pointer, ldb: width,
                  c: product.pointer, ldc: width)
        for o in 0..<g.outChannels {
            for img in 0..<nb {
                let bo = (pb?[o] ?? 0) + (ps?[(n0 + img) * g.outChannels + o] ?? 0)
                let src = product.pointer + o * width + img * p, dst = py + ((n0 + img) * g.outChannels + o) * p
                if accumulate { for i in 0..<p { dst[i] += src[i] + bo } } else { for i in 0..<p { dst[i] = src[i] + bo } }
            }
        }
    }
}

/// Workers own disjoint images, so dx needs no locking; each sums its weight and bias gradients
/// privately and they are added at the end.
func columnsConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                           dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                           kernels: KernelSet = .active) {
    if g.isPointwise {
        return pointwiseConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias)
    }
    let plan = ConvPlan(g), p = g.outPixels
    let wsize = g.outChannels * g.patch
    let partials = Storage(zeros: plan.workers * (wsize + g.outChannels))
    let px = SharedPointer(x), pw = SharedPointer(weight), pdy = SharedPointer(dy), pdx = dx.map { SharedPointer($0) }
    let pparts = SharedPointer(partials.pointer)
    let wantWeight = dweight != nil, wantBias = dbias != nil
    plan.run { worker in
        let columns = Storage(uninitializedCount: g.patch * plan.chunk * p)
        let gathered = Storage(uninitializedCount: g.outChannels * plan.chunk * p)
        let dw = pparts + worker * (wsize + g.outChannels), db = dw + wsize
        let images = plan.images(of: worker, batch: g.batch)
        for n0 in stride(from: images.lowerBound, to: images.upperBound, by: plan.chunk) {
            let nb = min(plan.chunk, images.upperBound - n0), width = nb * p
            // dy of this chunk as [O, nb Ho Wo]
            for o in 0..<g.outChannels {
                for img in 0..<nb {
                    (gathered.pointer + o * width + img * p).update(from: pdy + ((n0 + img) * g.outChannels + o) * p, count: p)
                }
                if wantBias { db[o] += sum(gathered.pointer + o * width, count: width) }
            }
            if wantWeight {
                im2col(g, px.base, n0: n0, nb: nb, columns.pointer, kernels: kernels)
                plan.gemm(transposeB: true, m: g.outChannels, n: g.patch, k: width, a: gathered.pointer, lda: width,
                          b: columns.pointer, ldb: width, beta: 1, c: dw, ldc: g.patch)
            }
            if let pdx {
                plan.gemm(transposeA: true, m: g.patch, n: width, k: g.outChannels, a: pw.base, lda: g.patch,
                          b: gathered.pointer, ldb: width, c: columns.pointer, ldc: width)
                col2im(g, columns.pointer, n0: n0, nb: nb, pdx.base, kernels: kernels)
            }
        }
    }
    for worker in 0..<plan.workers {
        let dw = partials.pointer + worker * (wsize + g.outChannels), db = dw + wsize
        if let dweight { accumulate(dweight, dw, count: wsize) }
        if let dbias { for o in 0..<g.outChannels { dbias[o] += db[o] } }
    }
}

/// A 1x1 convolution (stride 1, no padding) needs no column matrix: image n's x [C, H W] already is
/// one, and its y [O, H W] is the product's own place. So y_n = weight [O, C] x x_n, one sgemm per
/// image straight into y (the bias and shift written first, then added to by beta = 1), and in the
/// backward pass dx_n += weight^T dy_n and dW += dy_n x_n^T, with no copies in between.
func pointwiseConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                            y: UnsafeMutablePointer<Float>) {
    let plan = ConvPlan(g), p = g.outPixels, c = g.channels, o = g.outChannels
    let px = SharedPointer(x), pw = SharedPointer(weight), py = SharedPointer(y)
    let pb = bias.map { SharedPointer($0) }, ps = shift.map { SharedPointer($0) }
    plan.forEachChunk(batch: g.batch) { images in
        for n in images {
            let yn = py + n * o * p
            var beta: Float = accumulate ? 1 : 0
            if pb != nil || ps != nil {
                for j in 0..<o {
                    let bo = (pb?[j] ?? 0) + (ps?[n * o + j] ?? 0), row = yn + j * p
                    if accumulate { for i in 0..<p { row[i] += bo } } else { row.update(repeating: bo, count: p) }
                }
                beta = 1
            }
            plan.gemm(m: o, n: p, k: c, a: pw.base, lda: c, b: px + n * c * p, ldb: p, beta: beta, c: yn, ldc: p)
        }
    }
}

/// Workers own disjoint images; each sums its weight gradient privately, added at the end. The
/// bias gradient is dy's plane sums, as for the direct kernel (`biasGradient`).
func pointwiseConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                             dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                             dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?) {
    let plan = ConvPlan(g), p = g.outPixels, c = g.channels, o = g.outChannels, wsize = o * c
    let partials = Storage(zeros: plan.workers * wsize)
    let px = SharedPointer(x), pw = SharedPointer(weight), pdy = SharedPointer(dy), pdx = dx.map { SharedPointer($0) }
    let pparts = SharedPointer(partials.pointer), wantWeight = dweight != nil
    plan.run { worker in
        for n in plan.images(of: worker, batch: g.batch) {
            let dyn = pdy + n * o * p
            if wantWeight {
                plan.gemm(transposeB: true, m: o, n: c, k: p, a: dyn, lda: p, b: px + n * c * p, ldb: p, beta: 1,
                          c: pparts + worker * wsize, ldc: c)
            }
            if let pdx {
                plan.gemm(transposeA: true, m: c, n: p, k: o, a: pw.base, lda: c, b: dyn, ldb: p, beta: 1,
                          c: pdx + n * c * p, ldc: p)
            }
        }
    }
    if let dweight { for worker in 0..<plan.workers { accumulate(dweight, partials.pointer + worker * wsize, count: wsize) } }
    if let dbias { biasGradient(g, dy: dy, dbias: dbias, kernels: .active) }
}

/// The naive twin: direct seven-loop convolution in Double.
public func conv2dNaive(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
    let ho = g.outHeight, wo = g.outWidth
    for n in 0..<g.batch {
        for o in 0..<g.outChannels {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var s = Double(bias?[o] ?? 0)
                    for c in 0..<g.channels {
                        for i in 0..<g.kernelHeight {
                            for j in 0..<g.kernelWidth {
                                let iy = oy * g.stride + i - g.padTop, ix = ox * g.stride + j - g.padLeft
                                guard iy >= 0, iy < g.height, ix >= 0, ix < g.width else { continue }
                                let xv = x[((n * g.channels + c) * g.height + iy) * g.width + ix]
                                let wv = weight[((o * g.channels + c) * g.kernelHeight + i) * g.kernelWidth + j]
                                s += Double(xv) * Double(wv)
                            }
                        }
                    }
                    y[((n * g.outChannels + o) * ho + oy) * wo + ox] = Float(s)
                }
            }
        }
    }
}
