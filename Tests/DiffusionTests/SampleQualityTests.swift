import Foundation
import Testing
import Layers
import Tensors
@testable import Diffusion

/// The sample-quality measures against closed forms and the properties that define them.
@Suite struct SampleQualityTests {
    /// A random orthogonal matrix (Gram-Schmidt of a Gaussian one), row-major.
    func orthogonal(_ n: Int, seed: UInt64) -> [Double] {
        var rng = RandomGenerator(seed: seed)
        var q: [[Double]] = []
        while q.count < n {
            var v = (0..<n).map { _ in Double(rng.normal()) }
            for u in q { let d = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }; v = zip(v, u).map { $0 - d * $1 } }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            q.append(v.map { $0 / norm })
        }
        return q.flatMap { $0 }
    }

    func transposed(_ a: [Double], n: Int) -> [Double] { (0..<(n * n)).map { a[($0 % n) * n + $0 / n] } }

    /// Q diag(d) Q^T.
    func rotatedDiagonal(_ d: [Double], _ q: [Double]) -> [Double] {
        let n = d.count
        let diag = (0..<(n * n)).map { $0 % (n + 1) == 0 ? d[$0 / n] : 0 }
        return SymmetricMatrix.multiply(SymmetricMatrix.multiply(q, diag, n: n), transposed(q, n: n), n: n)
    }

    @Test func eigenDecompositionReconstructs() {
        let n = 9, q = orthogonal(n, seed: 1), d = (0..<n).map { Double($0) - 3.5 }
        let a = rotatedDiagonal(d, q)
        let (values, vectors) = SymmetricMatrix.eigen(a, n: n)
        #expect(zip(values.sorted(), d).allSatisfy { abs($0 - $1) < 1e-10 }, "\(values.sorted())")
        let back = SymmetricMatrix.multiply(SymmetricMatrix.multiply(vectors, (0..<(n * n)).map { $0 % (n + 1) == 0 ? values[$0 / n] : 0 }, n: n),
                                            transposed(vectors, n: n), n: n)
        #expect(zip(back, a).allSatisfy { abs($0 - $1) < 1e-10 })
    }

    /// With covariances diagonal in one basis, FD = |mu_a - mu_b|^2 + sum (s_a + s_b - 2 sqrt(s_a s_b)),
    /// and a common rotation of both Gaussians leaves it unchanged.
    @Test func frechetDistanceMatchesTheClosedForm() {
        let n = 12
        var rng = RandomGenerator(seed: 2)
        let sa = (0..<n).map { _ in Double(rng.uniform()) * 3 + 0.1 }, sb = (0..<n).map { _ in Double(rng.uniform()) * 3 }
        let ma = (0..<n).map { _ in Double(rng.normal()) }, mb = (0..<n).map { _ in Double(rng.normal()) }
        let expected = zip(ma, mb).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
            + zip(sa, sb).reduce(0) { $0 + $1.0 + $1.1 - 2 * ($1.0 * $1.1).squareRoot() }
        let q = orthogonal(n, seed: 3)
        let rotate = { (m: [Double]) in (0..<n).map { i in (0..<n).reduce(0) { $0 + q[i * n + $1] * m[$1] } } }
        let a = FeatureStatistics(mean: rotate(ma), covariance: rotatedDiagonal(sa, q), count: 2)
        let b = FeatureStatistics(mean: rotate(mb), covariance: rotatedDiagonal(sb, q), count: 2)
        #expect(abs(frechetDistance(a, b) - expected) < 1e-9 * max(1, expected), "\(frechetDistance(a, b)) against \(expected)")
        #expect(abs(frechetDistance(b, a) - expected) < 1e-9 * max(1, expected))
        #expect(frechetDistance(a, a) < 1e-9)
    }

    /// Statistics of samples: N(0, I) against N(mu, I) in 8 dimensions, 20,000 each: FD near |mu|^2.
    @Test func frechetDistanceOfSamples() {
        var rng = RandomGenerator(seed: 4)
        let x = Tensor.randomNormal([20_000, 8], using: &rng), y = Tensor.randomNormal([20_000, 8], using: &rng) + 0.5
        let fd = frechetDistance(FeatureStatistics(features: x), FeatureStatistics(features: y))
        #expect(abs(fd - 8 * 0.25) < 0.05, "FD \(fd), expected 2")
    }

    /// KID is unbiased: two samples of one distribution average near zero over subsets (well within
    /// the spread), while a shifted one scores far above it.
    @Test func kernelDistanceIsUnbiased() {
        var rng = RandomGenerator(seed: 5)
        let x = Tensor.randomNormal([2000, 16], using: &rng), y = Tensor.randomNormal([2000, 16], using: &rng)
        let same = KernelDistance(x, y, subsets: 50, subsetSize: 500, using: &rng)
        #expect(abs(same.mean) < 3 * same.standardDeviation / 50.0.squareRoot() + 1e-4, "KID \(same.mean) sd \(same.standardDeviation)")
        let shifted = KernelDistance(x, y + 0.5, subsets: 10, subsetSize: 500, using: &rng)
        #expect(shifted.mean > 20 * same.standardDeviation, "KID \(shifted.mean) against sd \(same.standardDeviation)")
    }

    /// Precision and recall separate fidelity from coverage: a sample of one mode of a two-mode set
    /// is precise but covers half of it; a far-away set is neither.
    @Test func precisionAndRecall() {
        var rng = RandomGenerator(seed: 6)
        let real = Tensor.joined([Tensor.randomNormal([500, 4], using: &rng), Tensor.randomNormal([500, 4], using: &rng) + 20])
        let oneMode = Tensor.randomNormal([1000, 4], using: &rng)
        let both = PrecisionRecall(real: real, generated: Tensor.joined([Tensor.randomNormal([500, 4], using: &rng),
                                                                          Tensor.randomNormal([500, 4], using: &rng) + 20]))
        #expect(both.precision > 0.85 && both.recall > 0.85, "\(both)")
        let half = PrecisionRecall(real: real, generated: oneMode)
        #expect(half.precision > 0.85 && abs(half.recall - 0.5) < 0.05, "\(half)")
        let far = PrecisionRecall(real: real, generated: oneMode + 100)
        #expect(far.precision == 0 && far.recall == 0)
    }
}
