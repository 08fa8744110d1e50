import ArgumentParser
import Datasets
import Diffusion
import Foundation
import Layers
import Tensors

/// The classifier whose features `ddpm evaluate --fd` compares images in.
struct ClassifierCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "classifier",
        abstract: "Train the image classifier whose features sample-quality measures use.",
        subcommands: [TrainClassifier.self])
}

struct TrainClassifier: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a small CNN on a labelled data set and cache its test set's feature statistics.",
        discussion: """
            The network (conv 3x3 stages of 32, 64 and 128 channels with GroupNorm and SiLU, the last \
            two at half resolution each, a mean over pixels, a linear layer) trains with AdamW and \
            cross-entropy on the training split, cosine learning rate. The folder holds config.json \
            (with id2label), model.safetensors, and test_statistics.safetensors: the mean and \
            covariance of the test split's features (the 128 pooled activations before the last \
            layer), the reference that ddpm evaluate --fd uses.
            """)

    @Option(help: "Labelled training images (the test split is scored and cached).") var data: String
    @Option(help: "Class labels as a .npy of integers [N], one per image of --data.") var labels: String?
    @Option(help: "Output folder.") var output: String
    @Option(help: "Passes over the training set.") var epochs = 3
    @Option(help: "Images per step.") var batchSize = 128
    @Option(help: "AdamW peak learning rate (cosine decay to zero).") var learningRate: Float = 2e-3
    @Option(help: "Image size the classifier takes (the data is resized to it).") var size = 28
    @Option(help: "Image channels (1 grey, 3 RGB).") var channels = 1
    @Flag(help: "Random horizontal flips.") var flip = false
    @Option(help: "Random seed (weights and data order).") var seed: UInt64 = 0
    @Flag(help: "Save the weights as float16 (half the size).") var float16 = false

    func validate() throws {
        guard epochs >= 1, batchSize >= 1, learningRate > 0, size >= 8, [1, 3].contains(channels) else {
            throw ValidationError("--epochs, --batch-size and --learning-rate must be positive, --size at least 8, --channels 1 or 3")
        }
    }

    func run() throws {
        let train = try ImageDataset.load(data, channels: channels, size: size, labels: labels, split: .train)
        let test = try ImageDataset.load(data, channels: channels, size: size, labels: labels, split: .test)
        if test.source == train.source {
            FileHandle.standardError.write(Data("note: \(data) has no test split; the accuracy and the cached statistics are of the training images\n".utf8))
        }
        guard let labels = train.labels, let testLabels = test.labels else {
            throw CommandError("\(train.labels == nil ? train.source : test.source): no class labels; a classifier trains on labelled images")
        }
        guard train.count >= batchSize else { throw CommandError("\(train.source): \(train.count) images, fewer than one batch of \(batchSize)") }
        var rng = RandomGenerator(seed: seed)
        let classifier = ImageClassifier(config: ClassifierConfig(inChannels: channels, sampleSize: size, classNames: labels.names), using: &rng)
        var training = ClassifierTraining()
        training.epochs = epochs; training.batchSize = batchSize; training.learningRate = learningRate
        training.flip = flip; training.seed = seed
        let steps = epochs * (train.count / batchSize)
        let bar = ProgressBar(total: steps, label: "classifier")
        let began = Date()
        var recent: [Float] = []
        training.train(classifier, on: train) { step, _, loss in
            recent = Array((recent + [loss]).suffix(50))
            bar.update(step, detail: String(format: "loss %.4f  %.0f images/s", recent.reduce(0, +) / Float(recent.count),
                                             Double(step * batchSize) / Date().timeIntervalSince(began)))
        }
        let folder = URL(fileURLWithPath: output)
        try classifier.save(to: folder, dtype: float16 ? .f16 : .f32)
        // accuracy and the cached statistics from the weights as saved (float16 moves them slightly)
        let saved = try ImageClassifier.load(folder)
        let images = test.images(0..<test.count)
        let accuracy = saved.accuracy(on: images, labels: testLabels.values)
        try FeatureStatistics(features: saved.features(of: images))
            .save(to: folder.appendingPathComponent(ReferenceStatistics.fileName), source: test.source)
        print(String(format: "wrote %@: test accuracy %.4f on %d images of %@ (%d steps, %.0f s)",
                     output, accuracy, test.count, test.source, steps, Date().timeIntervalSince(began)))
    }
}

/// The cached feature statistics of a classifier's test split.
enum ReferenceStatistics {
    static let fileName = "test_statistics.safetensors"

    /// The cache beside `classifier`, if it was made from `source` with `count` images.
    static func cached(in classifier: URL, source: String, count: Int) throws -> FeatureStatistics? {
        let url = classifier.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let (statistics, cachedSource) = try FeatureStatistics.load(url)
        return cachedSource == source && statistics.count == count ? statistics : nil
    }
}
