import Datasets
import Foundation
import Layers
import Tensors

// Sample quality: how far generated images lie from real ones in the feature space of a classifier
// trained on the data set (`ImageClassifier`, the pooled activations before its last layer). The
// measures are the ones the literature computes in Inception's features (FID, KID, precision and
// recall); in our features the figures compare models of one data set with each other, not with
// published FIDs.

extension ImageClassifier {
    /// Features [N, D] of images [N, C, H, W] in [-1, 1], `batchSize` images a pass, no autodiff.
    public func features(of images: Tensor, batchSize: Int = 500) -> Tensor {
        withoutGradients {
            Tensor.joined(stride(from: 0, to: images.shape[0], by: batchSize).map { b in
                features(images.slice(b..<min(b + batchSize, images.shape[0]))).detached
            })
        }
    }

    /// The share of `images` whose most probable class is their label.
    public func accuracy(on images: Tensor, labels: [Int], batchSize: Int = 500) -> Double {
        let k = config.classNames.count
        var right = 0
        withoutGradients {
            for b in stride(from: 0, to: images.shape[0], by: batchSize) {
                let logits = self(images.slice(b..<min(b + batchSize, images.shape[0])))
                for r in 0..<logits.shape[0] {
                    let row = logits.pointer + r * k
                    if (0..<k).max(by: { row[$0] < row[$1] }) == labels[b + r] { right += 1 }
                }
            }
        }
        return Double(right) / Double(images.shape[0])
    }
}

/// Trains an `ImageClassifier` on a labelled data set: AdamW, cross-entropy, random horizontal
/// flips when asked, batches in the same seeded order as diffusion training.
public struct ClassifierTraining {
    public var epochs = 3
    public var batchSize = 128
    public var learningRate: Float = 2e-3
    public var flip = false
    public var seed: UInt64 = 0

    public init() {}

    /// Trains `classifier` in place; `progress(step, steps, loss)` after every step.
    public func train(_ classifier: ImageClassifier, on data: ImageDataset, progress: (Int, Int, Float) -> Void = { _, _, _ in }) {
        require(data.labels != nil, "a classifier trains on labelled images")
        let sampler = BatchSampler(dataset: data, batchSize: batchSize, seed: seed, flip: flip)
        let steps = epochs * sampler.batchesPerEpoch
        let optimizer = AdamW(parameters: classifier.parameterTensors, learningRate: learningRate, weightDecay: 1e-4)
        let prefetcher = BatchPrefetcher(sampler, startingAt: 0)
        for step in 0..<steps {
            let batch = prefetcher.nextBatch()
            // cosine decay to zero over the run
            optimizer.learningRate = learningRate * Float(0.5 * (1 + cos(Double.pi * Double(step) / Double(steps))))
            classifier.zeroGradients()
            let loss = crossEntropy(classifier(batch.images), labels: batch.labels!)
            loss.backward()
            optimizer.update()
            progress(step + 1, steps, loss.item)
        }
    }
}

/// The mean and covariance of a set of feature vectors, in Double.
public struct FeatureStatistics: Equatable, Sendable {
    public let mean: [Double]
    /// [D, D] row-major, the unbiased (N - 1) estimate.
    public let covariance: [Double]
    public let count: Int
    public var dimension: Int { mean.count }

    public init(mean: [Double], covariance: [Double], count: Int) {
        require(covariance.count == mean.count * mean.count, "covariance of \(covariance.count) entries for \(mean.count) dimensions")
        self.mean = mean; self.covariance = covariance; self.count = count
    }

    /// The statistics of features [N, D], N >= 2.
    public init(features: Tensor) {
        let (n, d) = (features.shape[0], features.shape[1])
        require(features.rank == 2 && n >= 2, "statistics need at least two feature vectors [N, D], got \(features.shape)")
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mean[j] += Double(features.pointer[i * d + j]) } }
        mean = mean.map { $0 / Double(n) }
        var covariance = [Double](repeating: 0, count: d * d)
        var centred = [Double](repeating: 0, count: d)
        for i in 0..<n {
            for j in 0..<d { centred[j] = Double(features.pointer[i * d + j]) - mean[j] }
            for a in 0..<d { let ca = centred[a]; for b in a..<d { covariance[a * d + b] += ca * centred[b] } }
        }
        for a in 0..<d { for b in a..<d {
            covariance[a * d + b] /= Double(n - 1)
            covariance[b * d + a] = covariance[a * d + b]
        } }
        self.init(mean: mean, covariance: covariance, count: n)
    }

    /// As `save` writes them: `mean` [D], `covariance` [D, D], metadata `count` and `source`.
    public static func load(_ url: URL) throws -> (statistics: FeatureStatistics, source: String) {
        let contents = try Safetensors.read(url)
        guard let m = contents.tensors["mean"], let c = contents.tensors["covariance"], m.rank == 1,
              c.shape == [m.count, m.count], let count = contents.metadata["count"].flatMap(Int.init) else {
            throw FormatError(url, "feature statistics need mean [D], covariance [D, D] and a count in the metadata")
        }
        return (FeatureStatistics(mean: m.scalars.map(Double.init), covariance: c.scalars.map(Double.init), count: count),
                contents.metadata["source"] ?? "")
    }

    public func save(to url: URL, source: String) throws {
        try Safetensors.write(["mean": Tensor(shape: [dimension], mean.map(Float.init)),
                               "covariance": Tensor(shape: [dimension, dimension], covariance.map(Float.init))],
                              metadata: ["count": String(count), "source": source], to: url)
    }
}

/// The Frechet distance between the Gaussians fitted to two feature sets (Heusel et al. 2017):
/// |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2).
public func frechetDistance(_ a: FeatureStatistics, _ b: FeatureStatistics) -> Double {
    require(a.dimension == b.dimension, "Frechet distance of \(a.dimension)- and \(b.dimension)-dimensional features")
    let d = a.dimension
    let meanTerm = zip(a.mean, b.mean).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
    let traces = (0..<d).reduce(0) { $0 + a.covariance[$1 * d + $1] + b.covariance[$1 * d + $1] }
    return max(meanTerm + traces - 2 * SymmetricMatrix.traceOfSquareRootOfProduct(a.covariance, b.covariance, n: d), 0)
}

/// The kernel distance (KID, Binkowski et al. 2018): the unbiased estimate of the squared maximum
/// mean discrepancy under the kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets of
/// both sets, with the standard deviation over subsets (as torch-fidelity reports it).
public struct KernelDistance: Sendable {
    public let mean: Double, standardDeviation: Double
    public let subsets: Int, subsetSize: Int

    public init(_ x: Tensor, _ y: Tensor, subsets: Int = 100, subsetSize: Int = 1000, using rng: inout RandomGenerator) {
        let d = x.shape[1]
        let m = min(subsetSize, x.shape[0], y.shape[0])
        require(m >= 2 && y.shape[1] == d, "KID needs two or more features in each set, of one width")
        func kernelSum(_ a: Tensor, _ b: Tensor, skipDiagonal: Bool) -> Double {
            let gram = a.linear(weight: b, bias: nil)  // [m, m] of dot products
            var total = 0.0
            for i in 0..<m { for j in 0..<m where !(skipDiagonal && i == j) {
                let k = Double(gram.pointer[i * m + j]) / Double(d) + 1
                total += k * k * k
            } }
            return total
        }
        var values: [Double] = []
        for _ in 0..<subsets {
            let xs = x.rows(randomSubset(m, of: x.shape[0], using: &rng)).detached
            let ys = y.rows(randomSubset(m, of: y.shape[0], using: &rng)).detached
            let within = (kernelSum(xs, xs, skipDiagonal: true) + kernelSum(ys, ys, skipDiagonal: true)) / Double(m * (m - 1))
            values.append(within - 2 * kernelSum(xs, ys, skipDiagonal: false) / Double(m * m))
        }
        let average = values.reduce(0, +) / Double(subsets)
        mean = average
        standardDeviation = subsets > 1 ? (values.reduce(0) { $0 + ($1 - average) * ($1 - average) } / Double(subsets - 1)).squareRoot() : 0
        self.subsets = subsets; self.subsetSize = m
    }
}

/// `m` distinct indices below `n`, in random order (a partial Fisher-Yates shuffle).
func randomSubset(_ m: Int, of n: Int, using rng: inout RandomGenerator) -> [Int] {
    var p = Array(0..<n)
    for i in 0..<m { p.swapAt(i, i + rng.integer(below: n - i)) }
    return Array(p.prefix(m))
}

/// Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of
/// balls around its points reaching their k-th nearest neighbour in the set; precision is the share
/// of generated points inside the real manifold, recall the share of real points inside the
/// generated one.
public struct PrecisionRecall: Sendable {
    public let precision: Double, recall: Double
    public let k: Int

    public init(real: Tensor, generated: Tensor, k: Int = 3) {
        require(real.shape[0] > k && generated.shape[0] > k, "precision/recall need more than k = \(k) points in each set")
        let realRadii = Self.radii(real, k: k), generatedRadii = Self.radii(generated, k: k)
        precision = Self.shareInside(generated, manifold: real, radii: realRadii)
        recall = Self.shareInside(real, manifold: generated, radii: generatedRadii)
        self.k = k
    }

    /// Squared distances [rows of a, rows of b], `a` in blocks so that memory stays small.
    static func forEachDistanceBlock(_ a: Tensor, _ b: Tensor, _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let d = a.shape[1], nb = b.shape[0]
        let bNorms = (0..<nb).map { j in (0..<d).reduce(Float(0)) { $0 + b.pointer[j * d + $1] * b.pointer[j * d + $1] } }
        withoutGradients {
            for start in stride(from: 0, to: a.shape[0], by: 512) {
                let block = a.slice(start..<min(start + 512, a.shape[0]))
                let dots = block.linear(weight: b, bias: nil)
                for r in 0..<block.shape[0] {
                    let aNorm = (0..<d).reduce(Float(0)) { $0 + block.pointer[r * d + $1] * block.pointer[r * d + $1] }
                    for j in 0..<nb { dots.pointer[r * nb + j] = max(aNorm + bNorms[j] - 2 * dots.pointer[r * nb + j], 0) }
                }
                body(start, block.shape[0], dots.pointer)
            }
        }
    }

    /// The squared distance from each point to its k-th nearest other point of the same set.
    static func radii(_ x: Tensor, k: Int) -> [Float] {
        let n = x.shape[0]
        var radii = [Float](repeating: 0, count: n)
        forEachDistanceBlock(x, x) { start, rows, distances in
            for r in 0..<rows {
                var nearest = [Float](repeating: .infinity, count: k)  // ascending
                for j in 0..<n where j != start + r && distances[r * n + j] < nearest[k - 1] {
                    var i = k - 1
                    while i > 0 && nearest[i - 1] > distances[r * n + j] { nearest[i] = nearest[i - 1]; i -= 1 }
                    nearest[i] = distances[r * n + j]
                }
                radii[start + r] = nearest[k - 1]
            }
        }
        return radii
    }

    static func shareInside(_ points: Tensor, manifold: Tensor, radii: [Float]) -> Double {
        var inside = 0
        let n = manifold.shape[0]
        forEachDistanceBlock(points, manifold) { _, rows, distances in
            for r in 0..<rows where (0..<n).contains(where: { distances[r * n + $0] <= radii[$0] }) { inside += 1 }
        }
        return Double(inside) / Double(points.shape[0])
    }
}

/// Every sample-quality measure of one set of images against real ones.
public struct SampleQualityReport: Sendable {
    public let frechetDistance: Double
    public let kernelDistance: KernelDistance
    public let precisionRecall: PrecisionRecall
    /// Images compared: generated, and real (the Frechet distance's reference may hold more).
    public let generated: Int, real: Int

    /// Compares `generated` [N, C, H, W] with `real` [M, C, H, W] (both in [-1, 1]) in `classifier`'s
    /// features: the Frechet distance against all of `real` (or `realStatistics`, when given: the
    /// cached statistics of the same images), KID over `kidSubsets` subsets of up to 1000 of each,
    /// and precision/recall (k = 3) against the first N real images, so both manifolds hold as many.
    public init(generated: Tensor, real: Tensor, classifier: ImageClassifier, realStatistics: FeatureStatistics? = nil,
                kidSubsets: Int = 100, seed: UInt64 = 0) {
        let g = classifier.features(of: generated), r = classifier.features(of: real)
        frechetDistance = Diffusion.frechetDistance(FeatureStatistics(features: g), realStatistics ?? FeatureStatistics(features: r))
        var rng = RandomGenerator(seed: seed)
        kernelDistance = KernelDistance(g, r, subsets: kidSubsets, using: &rng)
        precisionRecall = PrecisionRecall(real: r.slice(0..<min(r.shape[0], g.shape[0])), generated: g)
        self.generated = g.shape[0]; self.real = r.shape[0]
    }
}
