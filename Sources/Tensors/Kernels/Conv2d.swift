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
    /// Multiply-adds x 2 of the forward pass.
    public var flops: Double { 2 * Double(batch * outChannels * outPixels * patch) }
}

/// Fills columns [C kh kw, nb Ho Wo] from images n0 ..< n0 + nb of x.
func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, n0: Int, nb: Int,
            _ columns: UnsafeMutablePointer<Float>) {
    let ho = g.outHeight, wo = g.outWidth, plane = g.height * g.width, width = nb * ho * wo
    for row in 0..<g.patch {
        let c = row / (g.kernelHeight * g.kernelWidth)
        let i = row / g.kernelWidth % g.kernelHeight, j = row % g.kernelWidth
        for img in 0..<nb {
            let src = x + ((n0 + img) * g.channels + c) * plane
            let dst = columns + row * width + img * ho * wo
            for oy in 0..<ho {
                let iy = oy * g.stride + i - g.padTop
                let d = dst + oy * wo
                if iy < 0 || iy >= g.height {
                    d.update(repeating: 0, count: wo)
                    continue
                }
                let s = src + iy * g.width
                if g.stride == 1 {
                    // the valid ox range, so the middle is a straight copy
                    let lo = min(max(0, g.padLeft - j), wo), hi = max(min(wo, g.width + g.padLeft - j), lo)
                    for ox in 0..<lo { d[ox] = 0 }
                    if lo < hi { (d + lo).update(from: s + lo + j - g.padLeft, count: hi - lo) }
                    for ox in hi..<wo { d[ox] = 0 }
                } else {
                    for ox in 0..<wo {
                        let ix = ox * g.stride + j - g.padLeft
                        d[ox] = ix >= 0 && ix < g.width ? s[ix] : 0
                    }
                }
            }
        }
    }
}

/// dx[images n0 ..< n0 + nb] += the column gradient folded back onto the input: the adjoint of im2col.
func col2im(_ g: ConvGeometry, _ columns: UnsafePointer<Float>, n0: Int, nb: Int,
            _ dx: UnsafeMutablePointer<Float>) {
    let ho = g.outHeight, wo = g.outWidth, plane = g.height * g.width, width = nb * ho * wo
    let taps = g.kernelHeight * g.kernelWidth
    for c in 0..<g.channels {
        for tap in 0..<taps {
            let i = tap / g.kernelWidth, j = tap % g.kernelWidth
            let row = c * taps + tap
            for img in 0..<nb {
                let dst = dx + ((n0 + img) * g.channels + c) * plane
                let src = columns + row * width + img * ho * wo
                for oy in 0..<ho {
                    let iy = oy * g.stride + i - g.padTop
                    if iy < 0 || iy >= g.height { continue }
                    let d = dst + iy * g.width, s = src + oy * wo
                    if g.stride == 1 {
                        let lo = min(max(0, g.padLeft - j), wo), hi = max(min(wo, g.width + g.padLeft - j), lo)
                        let shifted = d + j - g.padLeft
                        for ox in lo..<hi { shifted[ox] += s[ox] }
                    } else {
                        for ox in 0..<wo {
                            let ix = ox * g.stride + j - g.padLeft
                            if ix >= 0 && ix < g.width { d[ix] += s[ox] }
                        }
                    }
                }
            }
        }
    }
}

/// How a convolution's batch is split: `workers` groups of consecutive images, one per core, each
/// processed `chunk` images at a time so that its column matrix (about 1 MB) stays in cache
/// between im2col and sgemm. A single image goes to one worker whose products split across cores.
struct ConvPlan {
    let workers: Int, chunk: Int
    init(_ g: ConvGeometry) {
        workers = min(kernelThreads, g.batch)
        let perImage = g.patch * g.outPixels
        chunk = max(1, min((g.batch + workers - 1) / workers, (1 << 18) / max(1, perImage)))
    }
    func images(of worker: Int, batch: Int) -> Range<Int> { batch * worker / workers ..< batch * (worker + 1) / workers }

    /// Runs body(worker) on each worker.
    func run(_ body: @Sendable (Int) -> Void) {
        if workers == 1 { return body(0) }
        parallelRun(workers, body)
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

    /// Whichever measured faster (`ddpm bench --ops`, best of several alternating runs). The direct
    /// kernel wins by 10-60% over im2col at 14x14 and 28x28, most at few channels; at 7x7, with 8
    /// images side by side in each vector, by 20% forward and 7% backward (below 7 pixels, untried).
    /// F(4x4) wins from 32 channels in and out when each core has enough of its tiles per channel
    /// that each transformed kernel it reads serves many tiles: 4 per channel, or 2 where the sides
    /// are multiples of 4 and no tile is ragged (Zen 3, forward, batch 64: 32 -> 32 at 28x28 1.5x over
    /// direct, 64 -> 64 at 28x28 2.2x, 128 -> 128 at 14x14 1.5x, 64 -> 64 at 14x14 1.13x; batch 16,
    /// 1 tile per channel: 128 -> 128 at 14x14 1.3x slower than F(2x2), 256 -> 256 at 8x8 2x
    /// slower; Zen 4, batch 16, 2 per channel: 256 -> 256 at 32x32 1.45x faster than F(2x2) forward
    /// and 1.3x backward, but 64 -> 64 at 14x14, ragged, 1.7x slower). Otherwise F(2x2) from 64
    /// channels (1.06-1.4x over direct), else direct. Winograd splits the batch across cores by
    /// images, so a batch smaller than the cores goes direct.
    public static func best(for g: ConvGeometry) -> ConvAlgorithm {
        guard isDirectConv(g) && g.width >= 7 else { return .columns }
        let channels = min(g.channels, g.outChannels)
        guard g.batch >= kernelThreads else { return .direct }
        let tilesPerCore = (g.batch + kernelThreads - 1) / kernelThreads * ((g.height + 3) / 4) * ((g.width + 3) / 4)
        let perChannel = g.height % 4 == 0 && g.width % 4 == 0 ? 2 : 4
        if channels >= 32 && tilesPerCore >= perChannel * max(g.channels, g.outChannels) { return .winograd4x4 }
        return channels >= 64 ? .winograd : .direct
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
        columnsConv2dForward(g, x: x, weight: weight, bias: bias, shift: shift, accumulate: accumulate, y: y)
    }
}

/// Given dy, adds dL/dx (when dx is non-nil), dL/dweight and dL/dbias into their buffers.
public func conv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                           dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                           algorithm: ConvAlgorithm? = nil, kernels: KernelSet = .active) {
    let chosen = algorithm ?? .best(for: g)
    switch chosen {
    case .direct: directConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias, kernels: kernels)
    case .winograd, .winograd4x4:
        winogradConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias,
                               tile: chosen.winogradTile, kernels: kernels)
    case .columns: columnsConv2dBackward(g, x: x, weight: weight, dy: dy, dx: dx, dweight: dweight, dbias: dbias)
    }
}

func columnsConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                          y: UnsafeMutablePointer<Float>) {
    let plan = ConvPlan(g), p = g.outPixels
    let px = SharedPointer(x), pw = SharedPointer(weight), py = SharedPointer(y)
    let pb = bias.map { SharedPointer($0) }, ps = shift.map { SharedPointer($0) }
    plan.run { worker in
        let columns = Storage(uninitializedCount: g.patch * plan.chunk * p)
        let product = Storage(uninitializedCount: g.outChannels * plan.chunk * p)
        let images = plan.images(of: worker, batch: g.batch)
        for n0 in stride(from: images.lowerBound, to: images.upperBound, by: plan.chunk) {
            let nb = min(plan.chunk, images.upperBound - n0), width = nb * p
            let direct = g.kernelHeight == 1 && g.kernelWidth == 1 && g.stride == 1 && nb == 1
                && g.padTop + g.padLeft + g.padBottom + g.padRight == 0
            // a 1x1 convolution of one image reads the image itself as its column matrix
            let b: UnsafePointer<Float> = direct ? UnsafePointer(px + n0 * g.channels * p) : UnsafePointer(columns.pointer)
            if !direct { im2col(g, px.base, n0: n0, nb: nb, columns.pointer) }
            plan.gemm(m: g.outChannels, n: width, k: g.patch, a: pw.base, lda: g.patch, b: b, ldb: width,
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
}

/// Workers own disjoint images, so dx needs no locking; each sums its weight and bias gradients
/// privately and they are added at the end.
func columnsConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                           dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?) {
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
                im2col(g, px.base, n0: n0, nb: nb, columns.pointer)
                plan.gemm(transposeB: true, m: g.outChannels, n: g.patch, k: width, a: gathered.pointer, lda: width,
                          b: columns.pointer, ldb: width, beta: 1, c: dw, ldc: g.patch)
            }
            if let pdx {
                plan.gemm(transposeA: true, m: g.patch, n: width, k: g.outChannels, a: pw.base, lda: g.patch,
                          b: gathered.pointer, ldb: width, c: columns.pointer, ldc: width)
                col2im(g, columns.pointer, n0: n0, nb: nb, pdx.base)
            }
        }
    }
    for worker in 0..<plan.workers {
        let dw = partials.pointer + worker * (wsize + g.outChannels), db = dw + wsize
        if let dweight { accumulate(dweight, dw, count: wsize) }
        if let dbias { for o in 0..<g.outChannels { dbias[o] += db[o] } }
    }
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
