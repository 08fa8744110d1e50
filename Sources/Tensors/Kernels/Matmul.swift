import CBLAS

/// C[m, n] = alpha * op(A) op(B) + beta * C, row-major, through OpenBLAS. op(A) is [m, k]: A is
/// stored [m, lda] or, transposed, [k, lda]; likewise B. Every matrix product in the engine comes here.
@inline(__always)
public func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                beta, c, Int32(ldc))
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

/// Sets how many threads OpenBLAS uses for one product.
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

/// Runs `body` with OpenBLAS on one thread, for kernels whose own loop splits work across cores
/// and calls sgemm inside it (never both levels of threads at once).
func withSingleThreadedBLAS<T>(_ body: () -> T) -> T {
    let previous = openblas_get_num_threads()
    if previous == 1 { return body() }
    openblas_set_num_threads(1)
    defer { openblas_set_num_threads(previous) }
    return body()
}
