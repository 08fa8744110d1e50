import Foundation
import Tensors

/// Checks the gradients that autodiff gives `f` against central finite differences.
///
/// The scalar is L = sum_i f(x)_i r_i for a fixed random r (so every output element matters and
/// a wrong sign or a missing term cannot cancel), accumulated in Double. For up to `samples`
/// entries of each input, (L(x + h e) - L(x - h e)) / 2h is compared with the analytic gradient:
/// |a - n| <= atol + rtol max(|a|, |n|). Returns a description of each mismatch (empty: pass).
public func gradientMismatches(_ inputs: [Tensor], h: Float = 1e-2, rtol: Float = 1e-2, atol: Float = 1e-3,
                               samples: Int = 24, seed: UInt64 = 7,
                               _ f: ([Tensor]) -> Tensor) -> [String] {
    var rng = RandomGenerator(seed: seed)
    let tracked = inputs.map { $0.copy().trainable() }
    let out = f(tracked)
    let r = Tensor.randomNormal(out.shape, using: &rng)
    out.backward(seed: r)

    func loss(_ xs: [Tensor]) -> Double {
        let y = withoutGradients { f(xs) }
        var s = 0.0
        for i in 0..<y.count { s += Double(y.pointer[i]) * Double(r.pointer[i]) }
        return s
    }

    var problems: [String] = []
    for (k, x) in tracked.enumerated() {
        let analytic = x.gradient ?? Tensor(zeros: x.shape)
        let probe = inputs.map { $0.copy() }
        let indices = x.count <= samples ? Array(0..<x.count) : (0..<samples).map { _ in rng.integer(below: x.count) }
        for i in indices {
            let original = probe[k].pointer[i]
            probe[k].pointer[i] = original + h
            let plus = loss(probe)
            probe[k].pointer[i] = original - h
            let minus = loss(probe)
            probe[k].pointer[i] = original
            let numeric = Float((plus - minus) / Double(2 * h))
            let a = analytic.pointer[i]
            if abs(a - numeric) > atol + rtol * max(abs(a), abs(numeric)) {
                problems.append("input \(k) \(x.shape) index \(i): analytic \(a), numeric \(numeric)")
            }
        }
    }
    return problems
}

/// Largest |a - b| over two equally long buffers.
public func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.count == b.count, "comparing \(a.shape) with \(b.shape)")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a.pointer[i] - b.pointer[i])) }
    return m
}

/// Test data folder `Tests/Fixtures` (copied from the peer's reference fixtures).
public let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

/// The folder that holds this test process's temporary directories; removed when the process
/// exits, so that a test run leaves nothing behind in the system's temporary folder.
private let temporaryRoot: URL = {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("ddpm-test-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(at: temporaryRoot) }
    return url
}()

/// A fresh temporary directory, removed with the others when the test process exits.
public func temporaryDirectory() -> URL {
    let url = temporaryRoot.appendingPathComponent(UUID().uuidString)
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

public func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    return Tensor.randomNormal(shape, using: &rng, scale: scale)
}
