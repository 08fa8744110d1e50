import Dispatch

/// 3x3 convolution, stride 1, padding 1, by Winograd's minimal filtering F(2x2, 3x3) (Lavin and
/// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 2x2 block of outputs
/// comes from the 4x4 block of input around it with 16 multiplies per channel pair instead of 36.
///
///     Y = A^T [ sum_c (G g_oc G^T) . (B^T d_c B) ] A
///
/// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
/// A^T = [1 1 1 0; 0 1 -1 -1]. For each of the 16 positions of the transformed tiles the sum over
/// channels is one matrix product, U[xi] [O, C] x V[xi] [C, tiles], so the bulk of the work is
/// 16 sgemms, 2.25x fewer multiply-adds than the direct kernel. The transforms cost a few adds
/// per value and move 4x the input through memory, so this pays on wide layers only.
///
/// The backward data pass is the same convolution of dy with the kernel flipped and its channel
/// axes swapped (`winogradWeights(flipped: true)`); dW stays with the direct kernel.

/// U [16, O, C]: G w[o, c] G^T for every channel pair; `flipped` transforms the kernel of the
/// backward data pass instead, [16, C, O] from w[o, c, 2 - i, 2 - j].
func winogradWeights(_ w: UnsafePointer<Float>, outChannels o: Int, channels c: Int, flipped: Bool) -> Storage {
    let (rows, inner) = flipped ? (c, o) : (o, c)
    let u = Storage(uninitializedCount: 16 * rows * inner)
    let pu = u.pointer, plane = rows * inner
    for row in 0..<rows {
        for k in 0..<inner {
            func tap(_ t: Int) -> Float { flipped ? w[(k * c + row) * 9 + 8 - t] : w[(row * c + k) * 9 + t] }
            // h = G g (4 rows of 3), then each row times G^T gives a row of u
            let g0 = SIMD3(tap(0), tap(1), tap(2)), g1 = SIMD3(tap(3), tap(4), tap(5)), g2 = SIMD3(tap(6), tap(7), tap(8))
            func put(_ hr: SIMD3<Float>, _ r: Int) {
                let q = pu + 4 * r * plane + row * inner + k
                q[0] = hr[0]; q[plane] = (hr[0] + hr[1] + hr[2]) / 2
                q[2 * plane] = (hr[0] - hr[1] + hr[2]) / 2; q[3 * plane] = hr[2]
            }
            put(g0, 0); put((g0 + g1 + g2) / 2, 1); put((g0 - g1 + g2) / 2, 2); put(g2, 3)
        }
    }
    return u
}

/// q[0, plane, 2 plane, 3 plane] = row B: (r0 - r2, r1 + r2, r2 - r1, r1 - r3).
@inline(__always)
private func putTransformedRow(_ row: SIMD4<Float>, _ q: UnsafeMutablePointer<Float>, _ plane: Int) {
    q[0] = row[0] - row[2]; q[plane] = row[1] + row[2]
    q[2 * plane] = row[2] - row[1]; q[3 * plane] = row[1] - row[3]
}

/// y (+)= conv(x, w) (+ bias) for x [N, C, H, W] and U from `winogradWeights` [16, O, C]: each core
/// takes its own images, a chunk at a time: transform in, 16 sgemms, transform out.
func winogradConv2d(batch n: Int, channels c: Int, height h: Int, width w: Int, outChannels o: Int,
                    x: UnsafePointer<Float>, u: Storage, bias: UnsafePointer<Float>?,
                    accumulate: Bool, y: UnsafeMutablePointer<Float>) {
    let th = (h + 1) / 2, tw = (w + 1) / 2, perImage = th * tw
    let pw = 2 * tw + 2  // padded row: one zero column left, the rest right
    let workers = min(kernelThreads, n)
    let chunk = max(1, min((n + workers - 1) / workers, (1 << 20) / (16 * max(c, o) * perImage)))
    let px = SharedPointer(x), py = SharedPointer(y), pu = SharedPointer(u.pointer), pb = bias.map { SharedPointer($0) }
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        let images = n * worker / workers ..< n * (worker + 1) / workers
        let v = Storage(uninitializedCount: 16 * c * chunk * perImage)
        let m = Storage(uninitializedCount: 16 * o * chunk * perImage)
        let padded = Storage(zeros: (2 * th + 2) * pw)
        for n0 in Swift.stride(from: images.lowerBound, to: images.upperBound, by: chunk) {
            let nb = min(chunk, images.upperBound - n0), tiles = nb * perImage
            // V[xi][k][t] = (B^T d B)[xi] for the 4x4 block d of channel k under tile t
            for image in 0..<nb {
                for k in 0..<c {
                    let src = px + ((n0 + image) * c + k) * h * w, p = padded.pointer
                    for r in 0..<h { (p + (r + 1) * pw + 1).update(from: src + r * w, count: w) }
                    let dst = v.pointer + k * tiles + image * perImage, plane = c * tiles
                    for ty in 0..<th {
                        for tx in 0..<tw {
                            let d = p + 2 * ty * pw + 2 * tx, t = dst + ty * tw + tx
                            let r0 = SIMD4(d[0], d[1], d[2], d[3]), r1 = SIMD4(d[pw], d[pw + 1], d[pw + 2], d[pw + 3])
                            let r2 = SIMD4(d[2 * pw], d[2 * pw + 1], d[2 * pw + 2], d[2 * pw + 3])
                            let r3 = SIMD4(d[3 * pw], d[3 * pw + 1], d[3 * pw + 2], d[3 * pw + 3])
                            // B^T d by rows, then each row times B
                            putTransformedRow(r0 - r2, t, plane)
                            putTransformedRow(r1 + r2, t + 4 * plane, plane)
                            putTransformedRow(r2 - r1, t + 8 * plane, plane)
                            putTransformedRow(r1 - r3, t + 12 * plane, plane)
                        }
                    }
                }
            }
            // M[xi] = U[xi] V[xi]
            for xi in 0..<16 {
                gemm(m: o, n: tiles, k: c, a: pu + xi * o * c, lda: c, b: v.pointer + xi * c * tiles, ldb: tiles,
                     c: m.pointer + xi * o * tiles, ldc: tiles)
            }
            // Y = A^T M A, 2x2 per tile, clipped at odd edges
            let plane = o * tiles
            for image in 0..<nb {
                for k in 0..<o {
                    let b = pb?[k] ?? 0, dst = py + ((n0 + image) * o + k) * h * w
                    let src = m.pointer + k * tiles + image * perImage
                    for ty in 0..<th {
                        for tx in 0..<tw {
                            let s = src + ty * tw + tx
                            func row(_ r: Int) -> SIMD4<Float> {
                                SIMD4(s[4 * r * plane], s[(4 * r + 1) * plane], s[(4 * r + 2) * plane], s[(4 * r + 3) * plane])
                            }
                            let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3))
                            let a0 = m0 + m1 + m2, a1 = m1 - m2 - m3
                            let y00 = a0[0] + a0[1] + a0[2] + b, y01 = a0[1] - a0[2] - a0[3] + b
                            let y10 = a1[0] + a1[1] + a1[2] + b, y11 = a1[1] - a1[2] - a1[3] + b
                            let (yy, xx) = (2 * ty, 2 * tx), out = dst + yy * w + xx
                            let right = xx + 1 < w, below = yy + 1 < h
                            if accumulate {
                                out[0] += y00
                                if right { out[1] += y01 }
                                if below { out[w] += y10; if right { out[w + 1] += y11 } }
                            } else {
                                out[0] = y00
                                if right { out[1] = y01 }
                                if below { out[w] = y10; if right { out[w + 1] = y11 } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, weight) + bias, for `isDirectConv` geometries.
func winogradConv2dForward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
    let u = winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: false)
    winogradConv2d(batch: g.batch, channels: g.channels, height: g.height, width: g.width, outChannels: g.outChannels,
                   x: x, u: u, bias: bias, accumulate: false, y: y)
}

/// Adds dL/dx by Winograd, and dL/dweight and dL/dbias by the direct kernel.
func winogradConv2dBackward(_ g: ConvGeometry, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                            dweight: UnsafeMutablePointer<Float>?, dbias: UnsafeMutablePointer<Float>?) {
    if let dx {
        let u = winogradWeights(weight, outChannels: g.outChannels, channels: g.channels, flipped: true)
        winogradConv2d(batch: g.batch, channels: g.outChannels, height: g.height, width: g.width, outChannels: g.channels,
                       x: dy, u: u, bias: nil, accumulate: true, y: dx)
    }
    if dweight != nil || dbias != nil {
        directConv2dBackward(g, x: x, weight: weight, dy: dy, dx: nil, dweight: dweight, dbias: dbias)
    }
}
