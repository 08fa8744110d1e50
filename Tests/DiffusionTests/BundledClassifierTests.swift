import Datasets
import Diffusion
import Foundation
import Layers
import Testing
import Tensors

/// The classifier `ddpm evaluate --fd` uses by default, as committed under `models/`.
let bundledClassifier = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("models/fashion-mnist-classifier")

/// The bundled Fashion-MNIST classifier and the sample-quality measures in its features, on real data.
@Suite struct BundledClassifierTests {
    let classifier = try! ImageClassifier.load(bundledClassifier)
    let test = try! ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)

    /// It classifies the test set well (a classifier that knows the data has features that tell its images apart).
    @Test func classifiesTheTestSet() throws {
        let accuracy = classifier.accuracy(on: test.images(0..<test.count), labels: test.labels!.values)
        #expect(accuracy > 0.89, "test accuracy \(accuracy)")
    }

    /// The cached statistics are those of the test set's features.
    @Test func cachedStatisticsMatchTheTestSet() throws {
        let (cached, source) = try FeatureStatistics.load(bundledClassifier.appendingPathComponent("test_statistics.safetensors"))
        #expect(source == test.source && cached.count == test.count)
        let fresh = FeatureStatistics(features: classifier.features(of: test.images(0..<test.count)))
        #expect(frechetDistance(cached, fresh) < 1e-3, "FD between the cache and fresh statistics \(frechetDistance(cached, fresh))")
    }

    /// 1000 real training images score near zero against the test set; uniform noise and a blurred,
    /// darkened copy of real images score far from it; precision and recall are high for real images.
    @Test func realImagesAreNearAndNoiseIsFar() throws {
        let train = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .train)
        let real = test.images(0..<test.count)
        let near = SampleQualityReport(generated: train.images(0..<1000), real: real, classifier: classifier, kidSubsets: 20)
        var rng = RandomGenerator(seed: 3)
        let noise = Tensor(shape: [1000, 1, 28, 28], (0..<784_000).map { _ in rng.uniform() * 2 - 1 })
        let far = SampleQualityReport(generated: noise, real: real, classifier: classifier, kidSubsets: 20)
        let dim = SampleQualityReport(generated: train.images(1000..<2000) * 0.5 - 0.5, real: real, classifier: classifier, kidSubsets: 20)
        print("FD (swift-ddpm classifier) against the test set: real training images \(near.frechetDistance), "
              + "darkened \(dim.frechetDistance), noise \(far.frechetDistance); precision/recall real \(near.precisionRecall), noise \(far.precisionRecall)")
        #expect(near.frechetDistance < 0.2 && far.frechetDistance > 100 * near.frechetDistance, "\(near.frechetDistance) \(far.frechetDistance)")
        #expect(dim.frechetDistance > 10 * near.frechetDistance)
        #expect(near.precisionRecall.precision > 0.85 && near.precisionRecall.recall > 0.85, "\(near.precisionRecall)")
        // noise lands in a few real images' wide k-NN balls (precision about 0.16), but covers none of them
        #expect(far.precisionRecall.precision < 0.4 && far.precisionRecall.recall < 0.05, "\(far.precisionRecall)")
    }

    /// KID is unbiased: between two random halves of the test set its mean over subsets is near 0,
    /// well inside its spread; between real and darkened images it is far above.
    @Test func kernelDistanceOfOneSetIsNearZero() throws {
        var rng = RandomGenerator(seed: 4)
        let order = Array(0..<test.count).shuffled(using: &rng)
        let features = classifier.features(of: test.images(0..<test.count))
        let a = features.rows(Array(order[0..<5000])).detached, b = features.rows(Array(order[5000...])).detached
        let same = KernelDistance(a, b, subsets: 50, subsetSize: 1000, using: &rng)
        let darker = classifier.features(of: test.images(0..<2000) * 0.5 - 0.5)
        let different = KernelDistance(a, darker, subsets: 10, subsetSize: 1000, using: &rng)
        #expect(abs(same.mean) < 3 * same.standardDeviation / 50.0.squareRoot() + 1e-5, "KID \(same.mean) sd \(same.standardDeviation)")
        #expect(different.mean > 20 * same.standardDeviation, "\(different.mean) against sd \(same.standardDeviation)")
    }
}
