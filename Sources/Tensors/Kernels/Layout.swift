/// Kernels that only move data: nearest upsampling, channel concatenation, batched transpose.

/// y [N C, 2H, 2W] from x [N C, H, W]: each pixel copied into a 2x2 block.
public func upsampleNearest2xForward(_ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                     _ y: UnsafeMutablePointer<Float>) {
    let px = SharedPointer(x), py = SharedPointer(y)
    parallelFor(planes, cost: 4 * height * width) { range in
        for p in range {
            let src = px + p * height * width, dst = py + p * 4 * height * width
            for iy in 0..<height {
                let row = dst + 2 * iy * 2 * width
                for ix in 0..<width { let v = src[iy * width + ix]; row[2 * ix] = v; row[2 * ix + 1] = v }
                (row + 2 * width).update(from: row, count: 2 * width)
            }
        }
    }
}

/// dx += the sum of dy over each 2x2 block.
public func upsampleNearest2xBackward(_ dy: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                      _ dx: UnsafeMutablePointer<Float>) {
    let pg = SharedPointer(dy), pd = SharedPointer(dx)
    parallelFor(planes, cost: 4 * height * width) { range in
        for p in range {
            let src = pg + p * 4 * height * width, dst = pd + p * height * width
            for iy in 0..<height {
                let r0 = src + 2 * iy * 2 * width, r1 = r0 + 2 * width
                for ix in 0..<width {
                    dst[iy * width + ix] += r0[2 * ix] + r0[2 * ix + 1] + r1[2 * ix] + r1[2 * ix + 1]
                }
            }
        }
    }
}

/// Copies `rows` rows of `n` from src (row stride `srcStride`) to dst (row stride `dstStride`),
/// adding instead of overwriting when `add`. Concatenation and its gradient are both this.
public func copyRows(_ src: UnsafePointer<Float>, srcStride: Int, _ dst: UnsafeMutablePointer<Float>,
                     dstStride: Int, rows: Int, n: Int, add: Bool) {
    let ps = SharedPointer(src), pd = SharedPointer(dst)
    parallelFor(rows, cost: n) { range in
        for r in range {
            let s = ps + r * srcStride, d = pd + r * dstStride
            if add { for i in 0..<n { d[i] += s[i] } } else { d.update(from: s, count: n) }
        }
    }
}

/// y [B, C, R] = x [B, R, C] transposed in each batch; with `add`, y += instead.
public func transposeBatched(_ x: UnsafePointer<Float>, batch: Int, rows: Int, columns: Int,
                             _ y: UnsafeMutablePointer<Float>, add: Bool, kernels: KernelSet = .active) {
    let px = SharedPointer(x), py = SharedPointer(y)
    let tile = 32, tilesPerBatch = (rows + tile - 1) / tile
    parallelFor(batch * tilesPerBatch, cost: tile * columns) { range in
        for t in range {
            let b = t / tilesPerBatch, r0 = t % tilesPerBatch * tile, r1 = min(rows, r0 + tile)
            kernels.k.transpose(px + b * rows * columns + r0 * columns, columns, r1 - r0, columns, 1,
                                py + b * rows * columns + r0, rows, add ? 1 : 0)
        }
    }
}
