import Foundation
import Testing
import Tensors
import TestSupport

/// `ddpm classifier train` and `ddpm evaluate --fd` end to end on small made-up sets.
@Suite struct EvaluateCommandTests {
    /// 256 noisy 28x28 images: class 0 bright on the left, class 1 bright on the right.
    func halves(in dir: URL, seed: UInt64) throws -> (images: String, labels: String) {
        var rng = RandomGenerator(seed: seed)
        var pixels: [Float] = [], labels: [Int64] = []
        for i in 0..<256 {
            let c = i % 2
            for _ in 0..<28 { for x in 0..<28 { pixels.append(((x < 14) == (c == 0) ? 0.6 : -0.6) + 0.3 * (rng.uniform() - 0.5)) } }
            labels.append(Int64(c))
        }
        let images = dir.appendingPathComponent("x\(seed).npy"), y = dir.appendingPathComponent("y\(seed).npy")
        try NPY.encode(shape: [256, 1, 28, 28], float32: pixels).write(to: images)
        try NPY.encode(shape: [256], int64: labels).write(to: y)
        return (images.path, y.path)
    }

    @Test func classifierTrainsAndFrechetDistanceSeparatesSets() throws {
        let dir = temporaryDirectory()
        let (images, labels) = try halves(in: dir, seed: 1)
        let classifier = dir.appendingPathComponent("classifier").path
        var r = try ddpm(["classifier", "train", "--data", images, "--labels", labels, "--epochs", "4", "--batch-size", "32",
                          "--output", classifier])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("test accuracy 1.0000"), "\(r.out)")
        for file in ["config.json", "model.safetensors", "test_statistics.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: classifier + "/" + file), "\(file) missing")
        }
        // another draw of the same two classes scores near the set itself; noise scores far away
        let (other, _) = try halves(in: dir, seed: 2)
        let noise = dir.appendingPathComponent("noise.npy")
        var rng = RandomGenerator(seed: 3)
        try NPY.encode(shape: [256, 1, 28, 28], float32: (0..<(256 * 784)).map { _ in rng.uniform() * 2 - 1 }).write(to: noise)
        func measure(_ samples: String) throws -> [String: Double] {
            let r = try ddpm(["evaluate", "--fd", "--data", images, "--samples", samples, "--classifier", classifier, "--count", "256", "--json"])
            #expect(r.status == 0, "\(r.err)")
            let object = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] ?? [:]
            return object.compactMapValues { ($0 as? NSNumber)?.doubleValue }
        }
        let same = try measure(other), far = try measure(noise.path)
        #expect(same["fd"]! * 20 < far["fd"]!, "FD of a second draw \(same), of noise \(far)")
        #expect(same["precision"]! > 0.8 && same["recall"]! > 0.8 && far["precision"]! < 0.2, "\(same) \(far)")
        #expect(far["kid"]! > 10 * abs(same["kid"]!))
        r = try ddpm(["evaluate", "--fd", "--data", images, "--samples", noise.path, "--classifier", dir.path])
        #expect(r.status != 0 && r.err.contains("config.json") && r.err.contains("missing"), "\(r.err)")
    }
}
