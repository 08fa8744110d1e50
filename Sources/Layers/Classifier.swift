import Foundation
import Tensors

/// The shape of an `ImageClassifier`, as its folder's `config.json` holds it.
public struct ClassifierConfig: Equatable, Sendable {
    public var inChannels = 1
    public var sampleSize = 28
    /// Channels of each stage; every stage after the first halves the resolution.
    public var blockOutChannels = [32, 64, 128]
    public var normNumGroups = 8
    /// The class names (`id2label`), one per output.
    public var classNames: [String]

    public init(inChannels: Int, sampleSize: Int, classNames: [String], blockOutChannels: [Int] = [32, 64, 128]) {
        self.inChannels = inChannels; self.sampleSize = sampleSize
        self.classNames = classNames; self.blockOutChannels = blockOutChannels
    }

    /// The width of the feature vector that sample-quality measures compare.
    public var featureDimension: Int { blockOutChannels.last! }

    public static func load(_ url: URL) throws -> ClassifierConfig {
        let r = try ConfigReader(file: url)
        guard let names = try r.indexedStrings("id2label"), names.count >= 2 else {
            throw ConfigError(url, key: "id2label", "must name at least two classes")
        }
        var c = ClassifierConfig(inChannels: try r.int("in_channels") ?? 1, sampleSize: try r.int("sample_size") ?? 28, classNames: names)
        c.blockOutChannels = try r.ints("block_out_channels") ?? c.blockOutChannels
        c.normNumGroups = try r.int("norm_num_groups") ?? c.normNumGroups
        guard (1...4).contains(c.inChannels), (8...1024).contains(c.sampleSize) else {
            throw ConfigError(url, key: nil, "in_channels \(c.inChannels) and sample_size \(c.sampleSize) must lie in 1...4 and 8...1024")
        }
        guard !c.blockOutChannels.isEmpty, c.blockOutChannels.allSatisfy({ $0 > 0 && $0 <= 4096 && $0 % c.normNumGroups == 0 }) else {
            throw ConfigError(url, key: "block_out_channels", "\(c.blockOutChannels) must be positive multiples of norm_num_groups \(c.normNumGroups)")
        }
        return c
    }

    public func json() -> Data {
        let object: [String: Any] = [
            "_class_name": "ImageClassifier", "in_channels": inChannels, "sample_size": sampleSize,
            "block_out_channels": blockOutChannels, "norm_num_groups": normNumGroups,
            "id2label": Dictionary(uniqueKeysWithValues: classNames.enumerated().map { (String($0.offset), $0.element) }),
        ]
        return try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }
}

/// A small CNN that classifies images, trained on a data set's labels so that its penultimate
/// layer gives features in which generated and real images can be compared (our stand-in for
/// Inception, which neither fits 28x28 grey images nor can be had here):
///
///     conv_in 3x3 -> GroupNorm, SiLU
///     per stage i: conv 3x3 (stride 2 after the first stage) -> GroupNorm, SiLU -> conv 3x3 -> GroupNorm, SiLU
///     mean over pixels -> features [N, last width] -> linear -> logits [N, classes]
public final class ImageClassifier: Module {
    public let config: ClassifierConfig
    let convIn: Conv2d, normIn: GroupNorm
    let stages: [(down: Conv2d, downNorm: GroupNorm, conv: Conv2d, norm: GroupNorm)]
    let head: Linear

    public init(config: ClassifierConfig, using rng: inout RandomGenerator) {
        self.config = config
        let widths = config.blockOutChannels, g = config.normNumGroups
        convIn = Conv2d(inputChannels: config.inChannels, outputChannels: widths[0], kernelSize: 3, padding: 1, using: &rng)
        normIn = GroupNorm(groups: g, channels: widths[0])
        var stages: [(Conv2d, GroupNorm, Conv2d, GroupNorm)] = []
        for (i, w) in widths.enumerated() {
            let previous = i == 0 ? widths[0] : widths[i - 1]
            stages.append((Conv2d(inputChannels: previous, outputChannels: w, kernelSize: 3, stride: i == 0 ? 1 : 2, padding: 1, using: &rng),
                           GroupNorm(groups: g, channels: w),
                           Conv2d(inputChannels: w, outputChannels: w, kernelSize: 3, padding: 1, using: &rng),
                           GroupNorm(groups: g, channels: w)))
        }
        self.stages = stages
        head = Linear(inputFeatures: widths.last!, outputFeatures: config.classNames.count, using: &rng)
    }

    /// The pooled features [N, featureDimension] of images [N, C, H, W] in [-1, 1].
    public func features(_ x: Tensor) -> Tensor {
        var h = normIn(convIn(x), silu: true)
        for s in stages { h = s.norm(s.conv(s.downNorm(s.down(h), silu: true)), silu: true) }
        return h.spatialMean()
    }

    /// Logits [N, classes].
    public func callAsFunction(_ x: Tensor) -> Tensor { head(features(x)) }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("conv_in", convIn) + nested("norm_in", normIn)
            + stages.enumerated().flatMap { i, s in
                nested("stages.\(i).down", s.down) + nested("stages.\(i).down_norm", s.downNorm)
                    + nested("stages.\(i).conv", s.conv) + nested("stages.\(i).norm", s.norm)
            }
            + nested("head", head)
    }

    static let weightsName = "model.safetensors"

    /// A classifier folder: `config.json` and `model.safetensors`.
    public static func load(_ folder: URL) throws -> ImageClassifier {
        let configFile = folder.appendingPathComponent("config.json"), weights = folder.appendingPathComponent(weightsName)
        for file in [configFile, weights] where !FileManager.default.fileExists(atPath: file.path) {
            throw FormatError(file, "missing: a classifier folder holds config.json and \(weightsName) (ddpm classifier train writes one)")
        }
        var rng = RandomGenerator(seed: 0)
        let classifier = ImageClassifier(config: try ClassifierConfig.load(configFile), using: &rng)
        try classifier.load(Safetensors.read(weights).tensors, from: weights)
        return classifier
    }

    public func save(to folder: URL, dtype: Safetensors.DType = .f32) throws {
        try writeAtomically(config.json(), to: folder.appendingPathComponent("config.json"))
        try Safetensors.write(stateDictionary, metadata: ["format": "pt"], dtype: dtype, to: folder.appendingPathComponent(Self.weightsName))
    }
}
