import Foundation

/// Dense symmetric matrices in Double, row-major [n * n]: what the Frechet distance needs (the
/// trace of a matrix square root), small enough (n of a few hundred) that a plain method serves.
public enum SymmetricMatrix {
    /// Eigenvalues and eigenvectors (the columns of `vectors`, row-major) of the symmetric `a`, by
    /// cyclic Jacobi rotations (Golub & Van Loan, 8.5): accurate to rounding for any symmetric
    /// matrix, O(n^3) a sweep, a handful of sweeps.
    public static func eigen(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        require(a.count == n * n, "eigen: \(a.count) entries for an \(n) x \(n) matrix")
        var a = a, v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        let scale = a.reduce(0) { $0 + $1 * $1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += a[p * n + q] * a[p * n + q] } }
            if off <= 1e-30 * scale || off == 0 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where a[p * n + q] != 0 {
                    let apq = a[p * n + q]
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                    let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {  // columns p and q: A J
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {  // rows p and q: J^T (A J)
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { a[$0 * n + $0] }, v)
    }

    /// The product of two n x n matrices.
    public static func multiply(_ a: [Double], _ b: [Double], n: Int) -> [Double] {
        var c = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for k in 0..<n {
            let aik = a[i * n + k]
            if aik == 0 { continue }
            for j in 0..<n { c[i * n + j] += aik * b[k * n + j] }
        } }
        return c
    }

    /// The symmetric square root of a positive semi-definite matrix (negative rounding-level
    /// eigenvalues count as zero).
    public static func squareRoot(_ a: [Double], n: Int) -> [Double] {
        let (values, v) = eigen(a, n: n)
        var out = [Double](repeating: 0, count: n * n)
        for k in 0..<n {
            let r = max(values[k], 0).squareRoot()
            if r == 0 { continue }
            for i in 0..<n { for j in 0..<n { out[i * n + j] += r * v[i * n + k] * v[j * n + k] } }
        }
        return out
    }

    /// tr sqrt(A B) for symmetric positive semi-definite A and B: the sum of the square roots of
    /// the eigenvalues of A^1/2 B A^1/2, which has the same eigenvalues as A B and is symmetric.
    public static func traceOfSquareRootOfProduct(_ a: [Double], _ b: [Double], n: Int) -> Double {
        let r = squareRoot(a, n: n)
        let m = multiply(multiply(r, b, n: n), r, n: n)
        let symmetric = (0..<(n * n)).map { (m[$0] + m[($0 % n) * n + $0 / n]) / 2 }
        return eigen(symmetric, n: n).values.reduce(0) { $0 + max($1, 0).squareRoot() }
    }
}
