/// 2-D convolution as im2col + one sgemm per chunk of images, with the naive direct twin.
///
/// Shapes: x [N, C, H, W], weight [O, C, kh, kw] (OIHW, as PyTorch), bias [O], y [N, O, Ho, Wo],
/// Ho = (H + top + bottom - kh) / stride + 1, likewise Wo.
///
/// The column matrix of a chunk of `nb` images is [C kh kw, nb Ho Wo]: row (c, i, j) holds, for
/// each output pixel of each image, the input pixel under kernel tap (i, j) of channel c (0 in the
/// padding). Then y_chunk [O, nb Ho Wo] = weight [O, C kh kw] x columns, scattered back to NCHW.

public struct ConvGeometry: Sendable, Equatable {
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

    /// Images per chunk: the column matrix stays near 2M floats (8 MB).
    var chunk: Int { max(1, min(batch, (1 << 21) / max(1, patch * outPixels))) }
}

/// Fills columns [C kh kw, nb Ho Wo] from images n0 ..< n0 + nb of x.
func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, n0: Int, nb: Int,
            _ columns: UnsafeMutablePointer<Float>) {
    let px = SharedPointer(x), pc = SharedPointer(columns)
    let ho = g.outHeight, wo = g.outWidth, plane = g.height * g.width, width = nb * ho * wo
    parallelFor(g.patch, cost: width) { rows in
        for row in rows {
            let c = row / (g.kernelHeight * g.kernelWidth)
            let i = row / g.kernelWidth % g.kernelHeight, j = row % g.kernelWidth
            for img in 0..<nb {
                let src = px + ((n0 + img) * g.channels + c) * plane
                let dst = pc + row * width + img * ho * wo
                for oy in 0..<ho {
                    let iy = oy * g.stride + i - g.padTop
                    let d = dst + oy * wo
                    if iy < 0 || iy >= g.height {
                        for ox in 0..<wo { d[ox] = 0 }
                        continue
                    }
                    let s = src + iy * g.width
                    if g.stride == 1 {
                        // the valid ox range, so the middle is a straight copy
                        let lo = max(0, g.padLeft - j), hi = min(wo, g.width + g.padLeft - j)
                        for ox in 0..<min(lo, wo) { d[ox] = 0 }
                        if lo < hi { for ox in lo..<hi { d[ox] = s[ox + j - g.padLeft] } }
                        for ox in max(hi, 0)..<wo { d[ox] = 0 }
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
}

/// dx[images n0 ..< n0 + nb] += the column gradient folded back onto the input: the adjoint of im2col.
/// Parallel over input channels, whose rows write disjoint planes.
func col2im(_ g: ConvGeometry, _ columns: UnsafePointer<Float>, n0: Int, nb: Int,
            _ dx: UnsafeMutablePointer<Float>) {
    let pd = SharedPointer(dx), pc = SharedPointer(columns)
    let ho = g.outHeight, wo = g.outWidth, plane = g.height * g.width, width = nb * ho * wo
    let taps = g.kernelHeight * g.kernelWidth
    parallelFor(g.channels, cost: taps * width) { channels in
        for c in channels {
            for tap in 0..<taps {
                let i = tap / g.kernelWidth, j = tap % g.kernelWidth
                let row = c * taps + tap
                for img in 0..<nb {
                    let dst = pd + ((n0 + img) * g.channels + c) * plane
                    let src = pc + row * width + img * ho * wo
                    for oy in 0..<ho {
                        let iy = oy * g.stride + i - g.padTop
                        if iy < 0 || iy >= g.height { continue }
                        let d = dst + iy * g.width, s = src + oy * wo
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

/// y = conv(x, weight) + bias.
public func conv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
    let p = g.outPixels, chunk = g.chunk
    let columns = Storage(uninitializedCount: g.patch * chunk * p)
    let product = Storage(uninitializedCount: g.outChannels * chunk * p)
    let pp = SharedPointer(product.pointer), py = SharedPointer(y)
    let pb = bias.map { SharedPointer($0) }
    var n0 = 0
    while n0 < g.batch {
        let nb = min(chunk, g.batch - n0)
        let width = nb * p
        let direct = g.kernelHeight == 1 && g.kernelWidth == 1 && g.stride == 1 && nb == 1
            && g.padTop + g.padLeft + g.padBottom + g.padRight == 0
        if direct {
            // a 1x1 convolution of one image reads the image itself as its column matrix
            gemm(m: g.outChannels, n: width, k: g.patch, a: weight, lda: g.patch,
                 b: x + n0 * g.channels * p, ldb: width, c: product.pointer, ldc: width)
        } else {
            im2col(g, x, n0: n0, nb: nb, columns.pointer)
            gemm(m: g.outChannels, n: width, k: g.patch, a: weight, lda: g.patch,
                 b: columns.pointer, ldb: width, c: product.pointer, ldc: width)
        }
        let base = n0
        parallelFor(g.outChannels, cost: width) { outs in
            for o in outs {
                let b = pb?[o] ?? 0
                for img in 0..<nb {
                    let src = pp + o * width + img * p
                    let dst = py + ((base + img) * g.outChannels + o) * p
                    for i in 0..<p { dst[i] = src[i] + b }
                }
            }
        }
        n0 += nb
    }
}

/// Given dy, adds dL/dx (when dx is non-nil), dL/dweight and dL/dbias into their buffers.
public func conv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                           dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?) {
    let p = g.outPixels, chunk = g.chunk
    let columns = Storage(uninitializedCount: g.patch * chunk * p)
    let gathered = Storage(uninitializedCount: g.outChannels * chunk * p)
    let pg = SharedPointer(gathered.pointer), pdy = SharedPointer(dy)
    var n0 = 0
    while n0 < g.batch {
        let nb = min(chunk, g.batch - n0)
        let width = nb * p
        let base = n0
        // dy of this chunk as [O, nb Ho Wo]
        parallelFor(g.outChannels, cost: width) { outs in
            for o in outs {
                for img in 0..<nb {
                    (pg + o * width + img * p).update(from: pdy + ((base + img) * g.outChannels + o) * p, count: p)
                }
            }
        }
        if let dbias {
            for o in 0..<g.outChannels { dbias[o] += Float(sumOfElements(gathered.pointer + o * width, count: width)) }
        }
        if let dweight {
            im2col(g, x, n0: n0, nb: nb, columns.pointer)
            gemm(transposeB: true, m: g.outChannels, n: g.patch, k: width, a: gathered.pointer, lda: width,
                 b: columns.pointer, ldb: width, beta: 1, c: dweight, ldc: g.patch)
        }
        if let dx {
            gemm(transposeA: true, m: g.patch, n: width, k: g.outChannels, a: weight, lda: g.patch,
                 b: gathered.pointer, ldb: width, c: columns.pointer, ldc: width)
            col2im(g, columns.pointer, n0: n0, nb: nb, dx)
        }
        n0 += nb
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
