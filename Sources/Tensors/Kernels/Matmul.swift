import CKernels
import Dispatch

/// C[m, n] = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS on the calling thread.
/// op(A) is [m, k]: A is stored [m, lda] or, transposed, [k, lda]; likewise B. OpenBLAS runs
/// single-threaded (our own loops split every product across cores; left to its own threads, its
/// idle workers spin in sched_yield after each call and take the cores our kernels need: 12% of
/// all cycles in a U-Net step, measured), loaded with the best core for the CPU (CKernels' blas.c).
@inline(__always)
public func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    ddpm_sgemm(transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

/// `gemm` split across cores: the rows of C (or its columns, when there are more of them) in
/// one contiguous block per core. Small products stay on the calling thread.
public func parallelGemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                         alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int,
                         beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    let workers = min(kernelThreads, max(1, m * n * k / (1 << 18)))
    if workers == 1 || (m < 2 * workers && n < 16 * workers) {
        return gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                    a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
    let pa = SharedPointer(a), pb = SharedPointer(b), pc = SharedPointer(c)
    let splitRows = m >= n
    parallelRun(workers) { w in
        if splitRows {
            let lo = m * w / workers, hi = m * (w + 1) / workers
            guard lo < hi else { return }
            gemm(transposeA: transposeA, transposeB: transposeB, m: hi - lo, n: n, k: k, alpha: alpha,
                 a: pa + (transposeA ? lo : lo * lda), lda: lda, b: pb.base, ldb: ldb,
                 beta: beta, c: pc + lo * ldc, ldc: ldc)
        } else {
            // split the columns: a multiple of 16 per block keeps BLAS's vector tiles whole
            let step = (n / workers + 15) / 16 * 16
            let lo = min(n, w * step), hi = w == workers - 1 ? n : min(n, (w + 1) * step)
            guard lo < hi else { return }
            gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: hi - lo, k: k, alpha: alpha,
                 a: pa.base, lda: lda, b: pb + (transposeB ? lo * ldb : lo),
                 ldb: ldb, beta: beta, c: pc + lo, ldc: ldc)
        }
    }
}

/// The naive twin of `gemm`, for tests: triple loop, Double accumulation.
public func gemmNaive(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                      alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int,
                      beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                let av = transposeA ? a[p * lda + i] : a[i * lda + p]
                let bv = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                s += Double(av) * Double(bv)
            }
            let old = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = alpha * Float(s) + old
        }
    }
}
