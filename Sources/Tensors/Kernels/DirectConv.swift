import Dispatch

/// 3x3 convolution, stride 1, padding 1, computed directly on zero-bordered planes: the path for
/// few-channel layers, where im2col's nine-fold column matrix costs more than the product itself.
///
/// Every plane (of x, or of dy in the backward pass) is copied into a zero border of one pixel:
/// H + 2 rows of W + 1 pixels, pixel (y, x) at row y + 1, column x + 1, so that the zero at the
/// start of each row is both its left border and the previous row's right border. A pixel is
/// `lanes` floats: one image's value (lanes 1), or the same pixel of 8 images side by side
/// (lanes 8, for small planes, where one image's outputs fill few register tiles). Output pixel
/// (y, x) starts at float q = (y (W + 1) + x) lanes, and its tap (i, j) reads the bordered plane at
/// q + i pitch + j lanes (pitch = (W + 1) lanes floats), so VL consecutive output floats take one
/// unaligned vector load per tap. Column W of each output row is computed and dropped. A register
/// tile (the kernel set's, CKernels' family/conv.h) is 4 output channels x 3 vectors (2 at lanes
/// 8): 12 accumulators, 7 loads per 12 FMAs. The tiles sweep a few input channels at a time, whose
/// planes stay in L1.
///
/// The backward pass reuses the forward tile: dx is the convolution of the bordered dy with the
/// kernel flipped and its channel axes swapped. dW[o, c, i, j] is a dot product over q of dy[o]
/// and x[c] shifted by the tap, taken for 4 output channels x 3 taps at a time.
struct BorderedPlanes {
    let height, width, images, lanes, pitch: Int
    /// Planes per channel: groups of `lanes` images (the last one zero-filled past the batch).
    let groups: Int
    /// Output floats computed per plane: H pitch rounded up to whole tiles.
    let outputs: Int
    /// Floats per bordered plane, with zero slack after it for the reads of the last tile.
    let stride: Int
    /// Output floats per register tile: 3 vectors (lanes 1) or 2 (lanes 8).
    let tile: Int
    /// Floats per vector of the kernel set.
    let vector: Int

    /// Lanes 8 where it saves a twentieth of the work: with 8-float vectors, on 7x7 planes, 56
    /// outputs per image instead of 72 (one image's 7 x 8 rounded up to 3 tiles of 24).
    init(height: Int, width: Int, images: Int, kernels: KernelSet) {
        func roundUp(_ n: Int, _ k: Int) -> Int { (n + k - 1) / k * k }
        let k = kernels.k
        let single = images * roundUp(height * (width + 1), k.conv_tile)
        let interleaved = roundUp(images, 8) * roundUp(height * (width + 1), k.conv_interleaved_tile / 8)
        lanes = images >= 8 && 20 * interleaved < 19 * single ? 8 : 1
        self.height = height; self.width = width; self.images = images
        vector = k.vector_floats
        pitch = (width + 1) * lanes
        groups = (images + lanes - 1) / lanes
        tile = lanes == 1 ? k.conv_tile : k.conv_interleaved_tile
        outputs = roundUp(height * pitch, tile)
        stride = roundUp(outputs + 2 * pitch + 2 * lanes, vector)
    }

    /// Offset of pixel (0, 0) in a bordered plane.
    var origin: Int { pitch + lanes }
    /// Floats after the last plane that reads may touch.
    var slack: Int { 2 * pitch + 2 * lanes + vector }

    /// The [N, C, H, W] planes of `source` bordered, channel-major: plane (c, group) starts at
    /// (c groups + group) stride, so one channel's planes of consecutive images follow each other,
    /// with zero slack after the last one for reads that run past it.
    func border(_ source: UnsafePointer<Float>, channels: Int, kernels: KernelSet = .active) -> Storage {
        let result = Storage(uninitializedCount: channels * groups * stride + slack)
        let ps = SharedPointer(source), pr = SharedPointer(result.pointer)
        let (h, w, lanes, stride, groups, images) = (height, width, lanes, stride, groups, images)
        (result.pointer + channels * groups * stride).update(repeating: 0, count: slack)
        parallelFor(groups * channels, cost: stride) { range in
            for plane in range {
                let c = plane / groups, group = plane % groups
                kernels.k.border_plane(ps + (group * lanes * channels + c) * h * w, channels * h * w,
                                       min(lanes, images - group * lanes), h, w, lanes, pr + plane * stride, stride)
            }
        }
        return result
    }
}


/// Tap t (of 9) of the 3x3 kernel from `input` to `output` channel in the pass being computed:
/// w[output, input, t] forward, or, `flipped`, that of the backward data pass, which maps the O
/// channels of dy to the C of dx: w[input, output, 8 - t].
@inline(__always)
func kernelTap(_ w: UnsafePointer<Float>, channels c: Int, output: Int, input: Int, tap t: Int, flipped: Bool) -> Float {
    flipped ? w[(input * c + output) * 9 + 8 - t] : w[(output * c + input) * 9 + t]
}

/// Packs w [O, C, 3, 3] as [ceil(O / 4), C, 9, 4], zero past O; `flipped` packs the kernel of the
/// backward data pass instead, [ceil(C / 4), O, 9, 4] with w[o, c, 2 - i, 2 - j].
private func packWeights(_ w: UnsafePointer<Float>, outChannels o: Int, channels c: Int, flipped: Bool) -> Storage {
    let (rows, inner) = flipped ? (c, o) : (o, c)
    let blocks = (rows + 3) / 4
    let packed = Storage(zeros: blocks * inner * 36)
    for row in 0..<rows {
        for k in 0..<inner {
            for t in 0..<9 {
                let value = kernelTap(w, channels: c, output: row, input: k, tap: t, flipped: flipped)
                packed.pointer[((row / 4 * inner + k) * 9 + t) * 4 + row % 4] = value
            }
        }
    }
    return packed
}

/// For each group of images and block of 4 outputs: convolve the bordered planes of that group,
/// then write (or add, when `accumulate`) the valid pixels to y [N, outPlanes, H, W], plus bias
/// [outPlanes] and shift [N, outPlanes].
private func convolvePlanes(_ layout: BorderedPlanes, planes: Storage, channels: Int,
                            packed: Storage, outPlanes: Int, bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>? = nil,
                            accumulate: Bool, y: UnsafeMutablePointer<Float>, kernels: KernelSet) {
    let blocks = (outPlanes + 3) / 4, (h, w, lanes, pitch) = (layout.height, layout.width, layout.lanes, layout.pitch)
    let pp = SharedPointer(planes.pointer), pw = SharedPointer(packed.pointer), py = SharedPointer(y)
    let pb = bias.map { SharedPointer($0) }, ps = shift.map { SharedPointer($0) }
    let channelStride = layout.groups * layout.stride, chunk = max(4, 4096 / layout.stride)
    parallelFor(layout.groups * blocks, cost: channels * 9 * layout.outputs * 4) { items in
        let tile = Storage(uninitializedCount: 4 * layout.outputs)
        let out = tile.pointer
        for item in items {
            let group = item / blocks, block = item % blocks
            let first = pp + group * layout.stride, wb = pw + block * channels * 36
            // a few channels at a time over all tiles, so that their planes stay in L1
            for c0 in Swift.stride(from: 0, to: channels, by: chunk) {
                let planes = first + c0 * channelStride, count = min(chunk, channels - c0), wc = wb + c0 * 36
                let tile = lanes == 1 ? kernels.k.conv3x3_tile : kernels.k.conv3x3_interleaved_tile
                for q0 in Swift.stride(from: 0, to: layout.outputs, by: layout.tile) {
                    tile(planes + q0, channelStride, pitch, count, wc, out + q0, layout.outputs, c0 > 0 ? 1 : 0)
                }
            }
            for r in 0..<min(4, outPlanes - block * 4) {
                let o = block * 4 + r
                for lane in 0..<min(lanes, layout.images - group * lanes) {
                    let image = group * lanes + lane, b = (pb?[o] ?? 0) + (ps?[image * outPlanes + o] ?? 0)
                    let dst = py + (image * outPlanes + o) * h * w
                    let src = out + r * layout.outputs + lane
                    for row in 0..<h {
                        let d = dst + row * w, s = src + row * pitch
                        switch (accumulate, lanes) {
                        case (true, 1): for x in 0..<w { d[x] += s[x] + b }
                        case (false, 1): for x in 0..<w { d[x] = s[x] + b }
                        case (true, _): for x in 0..<w { d[x] += s[x &* lanes] + b }
                        case (false, _): for x in 0..<w { d[x] = s[x &* lanes] + b }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `directConv2dForward` and `directConv2dBackward` apply: 3x3, stride 1, padding 1.
public func isDirectConv(_ g: ConvGeometry) -> Bool {
    g.kernelHeight == 3 && g.kernelWidth == 3 && g.stride == 1
        && g.padTop == 1 && g.padLeft == 1 && g.padBottom == 1 && g.padRight == 1
}

/// y (+)= conv(x, weight) + bias (+ shift), for `isDirectConv` geometries.
func directConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                         bias: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, accumulate: Bool,
                         y: UnsafeMutablePointer<Float>, kernels: KernelSet = .active) {
    let layout = BorderedPlanes(height: g.height, width: g.width, images: g.batch, kernels: kernels)
    let planes = layout.border(x, channels: g.channels, kernels: kernels)
    let packed = FrozenWeights.prepared(weight, "direct", kernels) {
        packWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: false)
    }
    convolvePlanes(layout, planes: planes, channels: g.channels, packed: packed,
                   outPlanes: g.outChannels, bias: bias, shift: shift, accumulate: accumulate, y: y, kernels: kernels)
}

/// dbias[o] += the sum of dy's plane o over the batch.
func biasGradient(_ g: ConvGeometry, dy: UnsafePointer<Float>, dbias: UnsafeMutablePointer<Float>, kernels: KernelSet) {
    let pdb = SharedPointer(dbias), pdy = SharedPointer(dy), (n, o, pixels) = (g.batch, g.outChannels, g.outPixels)
    parallelFor(o, cost: n * pixels) { channels in
        for k in channels {
            for image in 0..<n { pdb[k] += kernels.k.sum(pdy + (image * o + k) * pixels, pixels) }
        }
    }
}

/// Adds dL/dx (when dx is non-nil), dL/dweight and dL/dbias, for `isDirectConv` geometries.
func directConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                          dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?,
                          accumulateDx: Bool = true, kernels: KernelSet = .active) {
    let layout = BorderedPlanes(height: g.height, width: g.width, images: g.batch, kernels: kernels)
    let (c, o) = (g.channels, g.outChannels)
    let dyPlanes = layout.border(dy, channels: o, kernels: kernels)
    if let dx {
        let packed = packWeights(weight, outChannels: o, channels: c, flipped: true)
        convolvePlanes(layout, planes: dyPlanes, channels: o, packed: packed,
                       outPlanes: c, bias: nil, accumulate: accumulateDx, y: dx, kernels: kernels)
    }
    if let dbias { biasGradient(g, dy: dy, dbias: dbias, kernels: kernels) }
    guard let dweight else { return }
    // Workers own disjoint groups of images and sum dW [O rounded to 4, C, 3, 3] privately.
    // Bordered dy is zero wherever it is not a pixel, so the dot products run over whole rows of q;
    // a chunk of groups at a time keeps 4 channels of dy in L1.
    let xPlanes = layout.border(x, channels: c, kernels: kernels)
    let blocks = (o + 3) / 4, wsize = blocks * 4 * c * 9, groups = layout.groups
    let workers = min(kernelThreads, groups), chunk = max(1, 1024 / layout.stride)
    let partials = Storage(zeros: workers * wsize + chunk * layout.stride + layout.slack)
    let zeros = SharedPointer(partials.pointer + workers * wsize)
    let pdy = SharedPointer(dyPlanes.pointer), px = SharedPointer(xPlanes.pointer)
    let pparts = SharedPointer(partials.pointer)
    let (origin, stride, pitch, lanes) = (layout.origin, layout.stride, layout.pitch, layout.lanes)
    let vector = layout.vector, count = (g.height * pitch + vector - 1) / vector * vector
    parallelRun(workers) { worker in
        let dw = pparts + worker * wsize
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: 12)
        defer { acc.deallocate() }
        let mine = groups * worker / workers ..< groups * (worker + 1) / workers
        for first in Swift.stride(from: mine.lowerBound, to: mine.upperBound, by: chunk) {
            let planes = min(chunk, mine.upperBound - first)
            for block in 0..<blocks {
                func plane(_ r: Int) -> UnsafePointer<Float> {
                    let k = block * 4 + r
                    return UnsafePointer(k < o ? pdy + (k * groups + first) * stride + origin : zeros.base)
                }
                let (d0, d1, d2, d3) = (plane(0), plane(1), plane(2), plane(3))
                for k in 0..<c {
                    let xk = px + (k * groups + first) * stride
                    for i in 0..<3 {
                        acc.update(repeating: 0, count: 12)
                        kernels.k.conv3x3_correlate(d0, d1, d2, d3, xk + i * pitch, lanes, count, planes, stride, acc)
                        for r in 0..<4 {
                            let base = dw + (((block * 4 + r) * c + k) * 3 + i) * 3
                            for j in 0..<3 { base[j] += acc[r * 3 + j] }
                        }
                    }
                }
            }
        }
    }
    for worker in 0..<workers { accumulate(dweight, partials.pointer + worker * wsize, count: o * c * 9) }
}
