import CKernels
import Dispatch

/// 3x3 convolution, stride 1, padding 1, by Winograd's minimal filtering F(m x m, 3x3) (Lavin and
/// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each m x m block of outputs
/// comes from the (m + 2) x (m + 2) block of input around it with (m + 2)^2 multiplies per channel
/// pair instead of 9 m^2.
///
///     Y = A^T [ sum_c (G g_oc G^T) . (B^T d_c B) ] A
///
/// For each of the (m + 2)^2 positions xi of the transformed tiles the sum over channels is one
/// matrix product, M[xi] = V[xi] [tiles, C] x U[xi] [C, O], so the bulk of the work is 16 (m = 2)
/// or 36 (m = 4) sgemms: 2.25x and 4x fewer multiply-adds than the direct kernel. The transforms
/// cost a few adds per value and move (m + 2)^2 / m^2 times the input through memory, so this pays
/// from 32 channels on (`ConvAlgorithm.best` picks between the two). F(4x4) rounds a little more
/// (its points reach 2 and its A^T 8) and wastes the ragged tiles of a side that is not a multiple of 4.
///
/// The backward data pass is the same convolution of dy with the kernel flipped and its channel
/// axes swapped (`winogradWeights(flipped: true)`); dW is the forward pass's adjoint
/// (`winogradWeightGradient`).
enum WinogradTile: Sendable {
    /// F(2x2, 3x3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].
    case f2
    /// F(4x4, 3x3) on the points 0, 1, -1, 2, -2, infinity (B^T and A^T in family/winograd.h).
    case f4

    /// Outputs per tile side (m).
    var outputs: Int { self == .f2 ? 2 : 4 }
    /// Inputs per tile side (m + 2), and the transformed tile's side.
    var side: Int { outputs + 2 }

    /// G, side rows of 3 (row-major): the kernel's transform.
    var g: [Float] {
        switch self {
        case .f2: [1, 0, 0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0, 0, 1]
        case .f4: [1.0 / 4, 0, 0, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6,
                   1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 24, -1.0 / 12, 1.0 / 6, 0, 0, 1]
        }
    }
}

/// Channel counts padded to whole vectors: of 8 floats, the step of the output and kernel
/// transforms and of `small_gemm`'s columns, and of the kernel set's own (16 with AVX-512), the
/// step of the transforms that write the tiles V.
@inline(__always)
func vectorPadded(_ n: Int, _ kernels: KernelSet) -> Int {
    let lanes = max(8, kernels.vectorFloats)
    return (n + lanes - 1) / lanes * lanes
}

/// U [side^2, C8, O8] (channel counts padded to vectors, zero past them): G w[o, c] G^T for every
/// channel pair, laid out so that the product with the tiles V [side^2, tiles, C8] is [tiles, O8],
/// each plane packed in the column panels that `small_gemm` reads (family/gemm.h), the planes
/// `ddpm_winograd_plane(C8 O8)` floats apart.
/// `flipped` transforms the kernel of the backward data pass instead, which reads O channels and
/// writes C: [side^2, O8, C8] from w[o, c, 2 - i, 2 - j]. The cores take input channels in turn.
func winogradWeights(_ w: UnsafePointer<Float>, outChannels o: Int, channels c: Int, flipped: Bool,
                     tile: WinogradTile, kernels: KernelSet) -> Storage {
    let (inputs, outputs) = flipped ? (o, c) : (c, o)
    let (ip, op) = (vectorPadded(inputs, kernels), vectorPadded(outputs, kernels))
    let side = tile.side
    let u = Storage(zeros: side * side * ddpm_winograd_plane(ip * op))
    let pw = SharedPointer(w), pu = SharedPointer(u.pointer)
    tile.g.withUnsafeBufferPointer { rows in
        let pg = SharedPointer(rows.baseAddress!)
        parallelFor(inputs, cost: op * side * side * 4) { range in
            kernels.k.winograd_weights(pw.base, c, outputs, flipped ? 1 : 0, pg.base, side, ip, op,
                                       range.lowerBound, range.upperBound, pu.base)
        }
    }
    return u
}

/// How an H x W image is cut for one tile: tilesY x tilesX blocks of m x m outputs, each computed
/// from the (m + 2) x (m + 2) block around it of the image copied channels-last into a zero
/// border (one zero row and column before it, the rest after it).
struct WinogradTiling {
    let tile: WinogradTile
    let height, width, tilesY, tilesX, paddedHeight, paddedWidth: Int

    init(_ tile: WinogradTile, height: Int, width: Int) {
        let m = tile.outputs
        self.tile = tile; self.height = height; self.width = width
        tilesY = (height + m - 1) / m; tilesX = (width + m - 1) / m
        paddedHeight = m * tilesY + 2; paddedWidth = m * tilesX + 2
    }

    var perImage: Int { tilesY * tilesX }
    /// Planes of the transformed tiles: side^2.
    var planes: Int { tile.side * tile.side }
    /// Floats from one plane of the transformed tiles of `images` images to the next, for
    /// `channels8` channels: a little more than the tiles' (`ddpm_winograd_plane`), so that the
    /// planes fall in different cache sets.
    func planeStride(images: Int, channels8: Int) -> Int { ddpm_winograd_plane(images * perImage * channels8) }
    /// Floats of the transformed tiles of `images` images.
    func transformedCount(images: Int, channels8: Int) -> Int {
        planes * planeStride(images: images, channels8: channels8)
    }
    /// Floats of one bordered image of `channels8` channels.
    func paddedCount(channels8: Int) -> Int { paddedHeight * paddedWidth * channels8 }

    /// The transformed tiles [side^2, tiles, C8] (planes `planeStride` apart) of images `images` of
    /// source [N, channels, H, W]: the images copied channels-last into `padded` ([images, ph, pw,
    /// C8], bordered), then B^T d B for each block d, or, `adjoint` (dy, for the weight gradient), A dY A^T for each
    /// m x m block dY (the kernel set's transforms, CKernels' family/winograd.h).
    func transform(_ source: UnsafePointer<Float>, channels: Int, images: Range<Int>, adjoint: Bool = false,
                   padded: UnsafeMutablePointer<Float>, into v: UnsafeMutablePointer<Float>, kernels: KernelSet) {
        let cp = vectorPadded(channels, kernels), k = kernels.k
        for (i, image) in images.enumerated() {
            k.channels_last_bordered(source + image * channels * height * width, channels, height, width,
                                     padded + i * paddedCount(channels8: cp), paddedHeight, paddedWidth, cp)
        }
        let transform = switch (tile, adjoint) {
        case (.f2, false): k.winograd_input
        case (.f4, false): k.winograd4_input
        case (.f2, true): k.winograd_output_adjoint
        case (.f4, true): k.winograd4_output_adjoint
        }
        transform(padded, images.count, tilesY, tilesX, paddedHeight, paddedWidth, cp, v)
    }
}

/// y (+)= conv(x, w) (+ bias) (+ shift) for x [N, C, H, W], U from `winogradWeights` for `tile`,
/// and a shift [N, O] added per image and channel. The cores claim chunks of images in turn; for
/// each: copy them channels-last into a zero border, transform every block a vector of channels
/// at a time into V [side^2, tiles, C8], side^2 sgemms M = V U, and transform back (the transforms are the
/// kernel set's, CKernels' family/winograd.h).
func winogradConv2d(batch n: Int, channels c: Int, height h: Int, width w: Int, outChannels o: Int,
                    x: UnsafePointer<Float>, u: Storage, tile: WinogradTile, bias: UnsafePointer<Float>?,
                    shift: UnsafePointer<Float>? = nil, accumulate: Bool, y: UnsafeMutablePointer<Float>,
                    kernels: KernelSet) {
    let tiling = WinogradTiling(tile, height: h, width: w)
    let (planes, perImage) = (tiling.planes, tiling.perImage)
    let (cp, op) = (vectorPadded(c, kernels), vectorPadded(o, kernels)), uplane = ddpm_winograd_plane(cp * op)
    let workers = min(kernelThreads, n)
    // Images per chunk: their transformed tiles (V, and M alike) in 512 KB, so that they stay in a
    // core's L2 from the transform to the products and back (4 MB chunks, in L3, were 1.1-1.5x
    // slower on Zen 3; a floor of as many tiles as channels, so that each transformed kernel read
    // serves more tiles, made the fmnist forward 7% slower).
    let chunk = max(1, min((n + workers - 1) / workers, (1 << 17) / (planes * max(cp, op) * perImage)))
    let px = SharedPointer(x), py = SharedPointer(y), pu = SharedPointer(u.pointer)
    // bias + shift per image (one row for all without a shift), zero past O so that 8 channels load at a time
    let biasRows = shift == nil ? 1 : n
    let padBias = Storage(zeros: biasRows * op)
    for image in 0..<biasRows {
        let row = padBias.pointer + image * op
        if let bias { row.update(from: bias, count: o) }
        if let shift { for k in 0..<o { row[k] += shift[image * o + k] } }
    }
    let pb = SharedPointer(padBias.pointer), biasStride = shift == nil ? 0 : op
    let output = tile == .f2 ? kernels.k.winograd_output : kernels.k.winograd4_output
    // each core keeps its scratch and claims chunks in turn until none is left (a fixed split left
    // one core waiting for the other for 8% of the time); each chunk writes its own images' outputs
    let claims = Claims((n + chunk - 1) / chunk)
    parallelRun(workers) { _ in
        let v = Storage(uninitializedCount: tiling.transformedCount(images: chunk, channels8: cp))
        let product = Storage(uninitializedCount: tiling.transformedCount(images: chunk, channels8: op))
        let padded = Storage(uninitializedCount: chunk * tiling.paddedCount(channels8: cp))
        while let index = claims.claim() {
            let n0 = index * chunk, nb = min(chunk, n - n0), tiles = nb * perImage
            // V[xi][t][k] = (B^T d B)[xi] for the block d under tile t
            let vplane = tiling.planeStride(images: nb, channels8: cp)
            let mplane = tiling.planeStride(images: nb, channels8: op)
            tiling.transform(px.base, channels: c, images: n0 ..< n0 + nb, padded: padded.pointer, into: v.pointer,
                             kernels: kernels)
            // M[xi] = V[xi] U[xi]: [tiles, C8] x [C8, O8]
            for xi in 0..<planes {
                kernels.k.small_gemm(tiles, op, cp, v.pointer + xi * vplane, cp, pu + xi * uplane,
                                     product.pointer + xi * mplane, op)
            }
            // Y = A^T M A, an m x m block per tile, clipped at ragged edges
            output(product.pointer, nb, tiling.tilesY, tiling.tilesX, op, pb + n0 * biasStride, biasStride, o, h, w,
                   accumulate ? 1 : 0, py + n0 * o * h * w)
        }
    }
}

/// y (+)= conv(x, weight) + bias (+ shift), for `isDirectConv` geometries.
func winogradConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                           y: UnsafeMutablePointer<Float>, tile: WinogradTile, kernels: KernelSet = .active) {
    let u = FrozenWeights.prepared(weight, "winograd\(tile.outputs)", kernels) {
        winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: false, tile: tile,
                        kernels: kernels)
    }
    winogradConv2d(batch: g.batch, channels: g.channels, height: g.height, width: g.width, outChannels: g.outChannels,
                   x: x, u: u, tile: tile, bias: bias, shift: shift, accumulate: accumulate, y: y, kernels: kernels)
}

/// Adds dL/dx (or writes it, `accumulateDx` false), dL/dweight and dL/dbias (each when non-nil),
/// the first two by Winograd.
func winogradConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                            dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                            accumulateDx: Bool = true, tile: WinogradTile, kernels: KernelSet = .active) {
    if let dx {
        let u = winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: true, tile: tile,
                                kernels: kernels)
        winogradConv2d(batch: g.batch, channels: g.outChannels, height: g.height, width: g.width, outChannels: g.channels,
                       x: dy, u: u, tile: tile, bias: nil, accumulate: accumulateDx, y: dx, kernels: kernels)
    }
    if let dweight { winogradWeightGradient(g, x: x, dy: dy, dweight: dweight, tile: tile, kernels: kernels) }
    if let dbias { biasGradient(g, dy: dy, dbias: dbias, kernels: kernels) }
}

/// dW (+)= the weight gradient, by the adjoint of the forward pass: its product M[xi] = V[xi] U[xi]
/// gives dU[xi] = V[xi]^T dM[xi] [C8, O8], summed over tiles, where V holds the input's transformed
/// tiles (as forward) and dM = A dY A^T those of dy (the output transform's adjoint); then
/// dW[o, c] = G^T dU[c, o] G (the kernel transform's adjoint). The products' inner dimension is the
/// tiles, so they go to BLAS; each core sums dU over its own images.
func winogradWeightGradient(_ g: ConvGeometry, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                            dweight: UnsafeMutablePointer<Float>, tile: WinogradTile, kernels: KernelSet) {
    let (n, c, h, w, o) = (g.batch, g.channels, g.height, g.width, g.outChannels)
    let tiling = WinogradTiling(tile, height: h, width: w)
    let (side, planes, perImage) = (tile.side, tiling.planes, tiling.perImage)
    let (cp, op) = (vectorPadded(c, kernels), vectorPadded(o, kernels))
    let workers = min(kernelThreads, n), uplane = ddpm_winograd_plane(cp * op), usize = planes * uplane
    // Images per chunk: V and dM in 512 KB, as forward, but at least 64 tiles, so that each pass
    // of a product over dU [C8, O8] (in L3 at 256 channels) does 64 multiply-adds per element
    // (16 tiles per product: 1.1-1.4x slower at 256 channels on Zen 4; 8 MB chunks: 1.1-2x slower).
    let chunk = min((n + workers - 1) / workers,
                    max((64 + perImage - 1) / perImage, (1 << 17) / (planes * (cp + op) * perImage), 1))
    let partials = Storage(zeros: workers * usize)
    let px = SharedPointer(x), pdy = SharedPointer(dy), pparts = SharedPointer(partials.pointer)
    parallelRun(workers) { worker in
        let images = n * worker / workers ..< n * (worker + 1) / workers
        let v = Storage(uninitializedCount: tiling.transformedCount(images: chunk, channels8: cp))
        let dm = Storage(uninitializedCount: tiling.transformedCount(images: chunk, channels8: op))
        let padded = Storage(uninitializedCount: chunk * tiling.paddedCount(channels8: max(cp, op)))
        let du = pparts + worker * usize, p = padded.pointer
        for n0 in Swift.stride(from: images.lowerBound, to: images.upperBound, by: chunk) {
            let nb = min(chunk, images.upperBound - n0), tiles = nb * perImage
            tiling.transform(px.base, channels: c, images: n0 ..< n0 + nb, padded: p, into: v.pointer, kernels: kernels)
            tiling.transform(pdy.base, channels: o, images: n0 ..< n0 + nb, adjoint: true, padded: p, into: dm.pointer,
                             kernels: kernels)
            let vplane = tiling.planeStride(images: nb, channels8: cp)
            let mplane = tiling.planeStride(images: nb, channels8: op)
            for xi in 0..<planes {
                gemm(transposeA: true, m: cp, n: op, k: tiles, a: v.pointer + xi * vplane, lda: cp,
                     b: dm.pointer + xi * mplane, ldb: op, beta: 1, c: du + xi * uplane, ldc: op)
            }
        }
    }
    let du = partials.pointer
    for worker in 1..<workers { accumulate(du, du + worker * usize, count: usize) }
    // dW[o, c] += G^T dU G (the kernel set's), the cores taking input channels in turn
    let pdw = SharedPointer(dweight), pdu = SharedPointer(du)
    tile.g.withUnsafeBufferPointer { rows in
        let pg = SharedPointer(rows.baseAddress!)
        parallelFor(c, cost: op * planes * 4) { range in
            kernels.k.winograd_weights_adjoint(pdu.base, c, o, pg.base, side, cp, op, range.lowerBound, range.upperBound,
                                               pdw.base)
        }
    }
}
