import Dispatch

/// 3x3 convolution, stride 1, padding 1, by Winograd's minimal filtering F(2x2, 3x3) (Lavin and
/// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 2x2 block of outputs
/// comes from the 4x4 block of input around it with 16 multiplies per channel pair instead of 36.
///
///     Y = A^T [ sum_c (G g_oc G^T) . (B^T d_c B) ] A
///
/// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
/// A^T = [1 1 1 0; 0 1 -1 -1]. For each of the 16 positions xi of the transformed tiles the sum
/// over channels is one matrix product, M[xi] = V[xi] [tiles, C] x U[xi] [C, O], so the bulk of
/// the work is 16 sgemms, 2.25x fewer multiply-adds than the direct kernel. The transforms cost a
/// few adds per value and move 4x the input through memory, so this pays from 64 channels on.
///
/// The backward data pass is the same convolution of dy with the kernel flipped and its channel
/// axes swapped (`winogradWeights(flipped: true)`); dW stays with the direct kernel.

/// Channel counts padded to whole vectors.
@inline(__always)
func vectorPadded(_ n: Int) -> Int { (n + 7) / 8 * 8 }

/// U [16, C8, O8] (channel counts padded to vectors, zero past them): G w[o, c] G^T for every
/// channel pair, laid out so that the product with the tiles V [16, tiles, C8] is [tiles, O8].
/// `flipped` transforms the kernel of the backward data pass instead, which reads O channels and
/// writes C: [16, O8, C8] from w[o, c, 2 - i, 2 - j].
func winogradWeights(_ w: UnsafePointer<Float>, outChannels o: Int, channels c: Int, flipped: Bool) -> Storage {
    let (inputs, outputs) = flipped ? (o, c) : (c, o)
    let (ip, op) = (vectorPadded(inputs), vectorPadded(outputs))
    let u = Storage(zeros: 16 * ip * op)
    let pu = u.pointer, plane = ip * op
    for a in 0..<inputs {
        for b in 0..<outputs {
            func tap(_ t: Int) -> Float { kernelTap(w, channels: c, output: b, input: a, tap: t, flipped: flipped) }
            // h = G g (4 rows of 3), then each row times G^T gives a row of u
            let g0 = SIMD3(tap(0), tap(1), tap(2)), g1 = SIMD3(tap(3), tap(4), tap(5)), g2 = SIMD3(tap(6), tap(7), tap(8))
            func put(_ hr: SIMD3<Float>, _ r: Int) {
                let q = pu + 4 * r * plane + a * op + b
                q[0] = hr[0]; q[plane] = (hr[0] + hr[1] + hr[2]) / 2
                q[2 * plane] = (hr[0] - hr[1] + hr[2]) / 2; q[3 * plane] = hr[2]
            }
            put(g0, 0); put((g0 + g1 + g2) / 2, 1); put((g0 - g1 + g2) / 2, 2); put(g2, 3)
        }
    }
    return u
}

/// y (+)= conv(x, w) (+ bias) (+ shift) for x [N, C, H, W], U from `winogradWeights`, and a
/// shift [N, O] added per image and channel. Each core takes its
/// own images, a chunk at a time: copy them channels-last into a zero border, transform every
/// 4x4 block 8 channels per vector into V [16, tiles, C8], 16 sgemms M = V U, and transform back
/// (the transforms are the kernel set's, CKernels' family/winograd.h).
func winogradConv2d(batch n: Int, channels c: Int, height h: Int, width w: Int, outChannels o: Int,
                    x: UnsafePointer<Float>, u: Storage, bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>? = nil,
                    accumulate: Bool, y: UnsafeMutablePointer<Float>, kernels: KernelSet) {
    let th = (h + 1) / 2, tw = (w + 1) / 2, perImage = th * tw
    let (cp, op) = (vectorPadded(c), vectorPadded(o))
    let ph = 2 * th + 2, pw = 2 * tw + 2  // the padded image: one zero row and column before, the rest after
    let workers = min(kernelThreads, n)
    let chunk = max(1, min((n + workers - 1) / workers, (1 << 20) / (16 * max(cp, op) * perImage)))
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
    parallelRun(workers) { worker in
        let images = n * worker / workers ..< n * (worker + 1) / workers
        let v = Storage(uninitializedCount: 16 * chunk * perImage * cp)
        let m = Storage(uninitializedCount: 16 * chunk * perImage * op)
        let padded = Storage(uninitializedCount: chunk * ph * pw * cp)
        for n0 in Swift.stride(from: images.lowerBound, to: images.upperBound, by: chunk) {
            let nb = min(chunk, images.upperBound - n0), tiles = nb * perImage
            // channels last, bordered: padded[image][row][column][k]
            let p = padded.pointer
            for image in 0..<nb {
                channelsLastBordered(px + (n0 + image) * c * h * w, channels: c, height: h, width: w,
                                     into: p + image * ph * pw * cp, rows: ph, columns: pw, paddedChannels: cp)
            }
            // V[xi][t][k] = (B^T d B)[xi] for the 4x4 block d under tile t
            let vplane = tiles * cp
            kernels.k.winograd_input(p, nb, th, tw, ph, pw, cp, v.pointer)
            // M[xi] = V[xi] U[xi]: [tiles, C8] x [C8, O8]
            for xi in 0..<16 {
                gemm(m: tiles, n: op, k: cp, a: v.pointer + xi * vplane, lda: cp, b: pu + xi * cp * op, ldb: op,
                     c: m.pointer + xi * tiles * op, ldc: op)
            }
            // Y = A^T M A, a 2x2 block per tile, clipped at odd edges
            kernels.k.winograd_output(m.pointer, nb, th, tw, op, pb + n0 * biasStride, biasStride, o, h, w, accumulate ? 1 : 0,
                                      py + n0 * o * h * w)
        }
    }
}

/// One image [C, H, W] into [rows, columns, C8]: pixel (r, col) at (r + 1, col + 1), zero around
/// it and in the padding channels. Eight channels at a time, so that each pixel's eight floats are
/// written together while eight planes are read in order; only the border is cleared.
@inline(__always)
func channelsLastBordered(_ x: UnsafePointer<Float>, channels c: Int, height h: Int, width w: Int,
                          into p: UnsafeMutablePointer<Float>, rows ph: Int, columns pw: Int, paddedChannels cp: Int) {
    let line = pw * cp
    p.update(repeating: 0, count: line)  // row 0
    p.advanced(by: (h + 1) * line).update(repeating: 0, count: (ph - h - 1) * line)  // rows past the image
    for r in 0..<h {
        let row = p + (r + 1) * line
        row.update(repeating: 0, count: cp)  // column 0
        (row + (w + 1) * cp).update(repeating: 0, count: (pw - w - 1) * cp)  // columns past the image
        if c < cp { for col in 0..<w { (row + (col + 1) * cp + c).update(repeating: 0, count: cp - c) } }
        var k0 = 0
        while k0 + 8 <= c {
            let s = x + k0 * h * w + r * w, plane = h * w
            var dst = row + cp + k0
            for col in 0..<w {
                dst[0] = s[col]; dst[1] = s[plane + col]; dst[2] = s[2 * plane + col]; dst[3] = s[3 * plane + col]
                dst[4] = s[4 * plane + col]; dst[5] = s[5 * plane + col]; dst[6] = s[6 * plane + col]
                dst[7] = s[7 * plane + col]
                dst += cp
            }
            k0 += 8
        }
        for k in k0..<c {
            let s = x + k * h * w + r * w
            for col in 0..<w { row[(col + 1) * cp + k] = s[col] }
        }
    }
}

/// y (+)= conv(x, weight) + bias (+ shift), for `isDirectConv` geometries.
func winogradConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                           y: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    let u = FrozenWeights.prepared(weight, "winograd", kernels) {
        winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: false)
    }
    winogradConv2d(batch: g.batch, channels: g.channels, height: g.height, width: g.width, outChannels: g.outChannels,
                   x: x, u: u, bias: bias, shift: shift, accumulate: accumulate, y: y, kernels: kernels)
}

/// Adds dL/dx by Winograd, and dL/dweight and dL/dbias by the direct kernel.
func winogradConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                            dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                            kernels: KernelSet = .active) {
    if let dx {
        let u = winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: true)
        winogradConv2d(batch: g.batch, channels: g.outChannels, height: g.height, width: g.width, outChannels: g.channels,
                       x: dy, u: u, bias: nil, accumulate: true, y: dx, kernels: kernels)
    }
    if dweight != nil || dbias != nil {
        directConv2dBackward(g, x: x, weight: weight, dy: dy, dx: nil, dweight: dweight, dbias: dbias, kernels: kernels)
    }
}
