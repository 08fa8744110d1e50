import Foundation
import Tensors

/// `unet/config.json` of a diffusers `UNet2DModel`, with diffusers' keys and defaults. Anything a
/// config asks for that this implementation does not compute (class embeddings given as vectors
/// (`"identity"`), Fourier or learned time embeddings, resnet up/down sampling, scale-shift time conditioning, other block types) is
/// refused with an error naming the key, never silently computed otherwise.
public struct UNetConfig: Equatable, Sendable {
    public enum DownBlock: String, Sendable, CaseIterable { case plain = "DownBlock2D", attention = "AttnDownBlock2D" }
    public enum UpBlock: String, Sendable, CaseIterable { case plain = "UpBlock2D", attention = "AttnUpBlock2D" }
    /// How a class label becomes a vector added to the time embedding (diffusers' `class_embed_type`).
    public enum ClassEmbedding: String, Sendable, CaseIterable {
        /// `class_embed_type` null with `num_class_embeds`: a learned row per class (`class_embedding.weight`).
        case table
        /// `"timestep"`: the label through the timestep's sinusoidal projection and its own MLP
        /// (`class_embedding.linear_1`, `class_embedding.linear_2`).
        case timestep
    }

    public var sampleSize = 32
    public var inChannels = 3
    public var outChannels = 3
    public var centerInputSample = false
    public var flipSinToCos = true
    public var freqShift: Float = 0
    public var timeEmbeddingDim: Int? = nil
    public var downBlockTypes: [DownBlock] = [.plain, .attention, .attention, .attention]
    public var upBlockTypes: [UpBlock] = [.attention, .attention, .attention, .plain]
    public var hasMidBlock = true
    public var blockOutChannels = [224, 448, 672, 896]
    public var layersPerBlock = 2
    public var midBlockScaleFactor: Float = 1
    public var downsamplePadding = 1
    public var dropout: Float = 0
    /// Channels per attention head; nil: one head.
    public var attentionHeadDim: Int? = 8
    public var normNumGroups = 32
    /// Groups of the mid block's attention norm; nil: `normNumGroups`.
    public var attnNormNumGroups: Int? = nil
    public var normEps: Float = 1e-5
    public var addAttention = true
    /// Rows of the class table (`num_class_embeds`): the classes plus one null label for guidance.
    public var numClassEmbeds: Int? = nil
    /// nil: an unconditional model.
    public var classEmbedding: ClassEmbedding? = nil

    public init() {}

    /// Whether the model takes a class label with every image.
    public var isClassConditional: Bool { classEmbedding != nil }

    /// The label that stands for "no class" in classifier-free guidance: the table's last row
    /// (DiT's convention; `num_class_embeds` = classes + 1). nil for unconditional models.
    public var nullClassLabel: Int? { isClassConditional ? numClassEmbeds.map { $0 - 1 } : nil }

    /// The dimension of the time embedding: 4 x the first block's channels unless given.
    public var timeEmbedDim: Int { timeEmbeddingDim ?? blockOutChannels[0] * 4 }

    public init(json data: Data, source: URL) throws {
        let r = try ConfigReader(json: data, source: source)
        func refuse(_ key: String, unless ok: Bool, _ what: String) throws {
            if !ok { throw ConfigError(source, key: key, what) }
        }
        if let className = try r.string("_class_name") {
            try refuse("_class_name", unless: className == "UNet2DModel", "is '\(className)'; only UNet2DModel is supported")
        }
        if let size = try? r.int("sample_size") {
            sampleSize = size
        } else if let pair = try r.ints("sample_size") {
            try refuse("sample_size", unless: pair.count == 2 && pair[0] == pair[1], "must be one size or a square [h, w], is \(pair)")
            sampleSize = pair[0]
        }
        inChannels = try r.int("in_channels") ?? inChannels
        outChannels = try r.int("out_channels") ?? outChannels
        centerInputSample = try r.bool("center_input_sample") ?? centerInputSample
        flipSinToCos = try r.bool("flip_sin_to_cos") ?? flipSinToCos
        freqShift = Float(try r.double("freq_shift") ?? Double(freqShift))
        timeEmbeddingDim = try r.int("time_embedding_dim")
        if let t = try r.string("time_embedding_type") {
            try refuse("time_embedding_type", unless: t == "positional", "'\(t)' is not supported (only 'positional')")
        }
        if let types = try r.strings("down_block_types") {
            downBlockTypes = try types.map { t in
                guard let b = DownBlock(rawValue: t) else {
                    throw ConfigError(source, key: "down_block_types", "'\(t)' is not supported (supported: DownBlock2D, AttnDownBlock2D)")
                }
                return b
            }
        }
        if let types = try r.strings("up_block_types") {
            upBlockTypes = try types.map { t in
                guard let b = UpBlock(rawValue: t) else {
                    throw ConfigError(source, key: "up_block_types", "'\(t)' is not supported (supported: UpBlock2D, AttnUpBlock2D)")
                }
                return b
            }
        }
        if r.containsNull("mid_block_type") {
            hasMidBlock = false
        } else if let mid = try r.string("mid_block_type") {
            try refuse("mid_block_type", unless: mid == "UNetMidBlock2D", "'\(mid)' is not supported (only UNetMidBlock2D or null)")
        }
        blockOutChannels = try r.ints("block_out_channels") ?? blockOutChannels
        layersPerBlock = try r.int("layers_per_block") ?? layersPerBlock
        midBlockScaleFactor = Float(try r.double("mid_block_scale_factor") ?? Double(midBlockScaleFactor))
        downsamplePadding = try r.int("downsample_padding") ?? downsamplePadding
        for key in ["downsample_type", "upsample_type"] {
            if let t = try r.string(key) { try refuse(key, unless: t == "conv", "'\(t)' is not supported (only 'conv')") }
        }
        dropout = Float(try r.double("dropout") ?? Double(dropout))
        if let act = try r.string("act_fn") {
            try refuse("act_fn", unless: act == "silu" || act == "swish", "'\(act)' is not supported (only 'silu')")
        }
        if r.containsNull("attention_head_dim") {
            attentionHeadDim = nil
        } else if let d = try r.int("attention_head_dim") {
            attentionHeadDim = d
        }
        normNumGroups = try r.int("norm_num_groups") ?? normNumGroups
        attnNormNumGroups = try r.int("attn_norm_num_groups")
        normEps = Float(try r.double("norm_eps") ?? Double(normEps))
        if let shift = try r.string("resnet_time_scale_shift") {
            try refuse("resnet_time_scale_shift", unless: shift == "default", "'\(shift)' is not supported (only 'default')")
        }
        addAttention = try r.bool("add_attention") ?? addAttention
        numClassEmbeds = try r.int("num_class_embeds")
        switch try r.string("class_embed_type") {
        case nil: classEmbedding = numClassEmbeds == nil ? nil : .table
        case "timestep": classEmbedding = .timestep
        case let t?:
            throw ConfigError(source, key: "class_embed_type", "'\(t)' is not supported (null with num_class_embeds, or 'timestep': "
                                + "both take integer labels; 'identity' and the projections take embedding vectors)")
        }
        try validate(source: source)
    }

    public static func load(_ url: URL) throws -> UNetConfig {
        try UNetConfig(json: ConfigReader.contents(of: url), source: url)
    }

    /// Rejects impossible values, naming the key.
    public func validate(source: URL) throws {
        func check(_ ok: Bool, _ key: String, _ what: String) throws { if !ok { throw ConfigError(source, key: key, what) } }
        try check(sampleSize >= 1, "sample_size", "must be positive, is \(sampleSize)")
        try check(inChannels >= 1, "in_channels", "must be positive, is \(inChannels)")
        try check(outChannels >= 1, "out_channels", "must be positive, is \(outChannels)")
        try check(!blockOutChannels.isEmpty && blockOutChannels.allSatisfy { $0 >= 1 }, "block_out_channels", "must be positive channel counts, is \(blockOutChannels)")
        try check(downBlockTypes.count == blockOutChannels.count, "down_block_types", "has \(downBlockTypes.count) blocks for \(blockOutChannels.count) block_out_channels")
        try check(upBlockTypes.count == blockOutChannels.count, "up_block_types", "has \(upBlockTypes.count) blocks for \(blockOutChannels.count) block_out_channels")
        try check(layersPerBlock >= 1, "layers_per_block", "must be at least 1, is \(layersPerBlock)")
        try check(normNumGroups >= 1, "norm_num_groups", "must be positive, is \(normNumGroups)")
        for c in blockOutChannels {
            try check(c % normNumGroups == 0, "norm_num_groups", "\(normNumGroups) does not divide block channels \(c)")
            if let d = attentionHeadDim { try check(d >= 1 && c % d == 0, "attention_head_dim", "\(d) does not divide block channels \(c)") }
        }
        if let g = attnNormNumGroups { try check(g >= 1 && blockOutChannels.last! % g == 0, "attn_norm_num_groups", "\(g) does not divide \(blockOutChannels.last!)") }
        try check(normEps > 0, "norm_eps", "must be positive, is \(normEps)")
        try check(dropout >= 0 && dropout < 1, "dropout", "must lie in [0, 1), is \(dropout)")
        try check(downsamplePadding == 0 || downsamplePadding == 1, "downsample_padding", "must be 0 or 1, is \(downsamplePadding)")
        try check(midBlockScaleFactor > 0, "mid_block_scale_factor", "must be positive, is \(midBlockScaleFactor)")
        let downsamplings = blockOutChannels.count - 1
        try check(downsamplings < 30 && sampleSize % (1 << downsamplings) == 0, "sample_size",
                  "\(sampleSize) is not divisible by 2^\(downsamplings) (one halving per block but the last)")
        if let t = timeEmbeddingDim { try check(t >= 1, "time_embedding_dim", "must be positive, is \(t)") }
        if let k = numClassEmbeds { try check(k >= 1, "num_class_embeds", "must be positive, is \(k)") }
        // before anything is allocated: the weights and one image's first feature maps must fit
        let needed = minimumBytes, available = Double(ProcessInfo.processInfo.physicalMemory)
        try check(needed <= available, sampleSize > 4096 ? "sample_size" : "block_out_channels",
                  "needs at least \(gigabytes(needed)) (\(gigabytes(4 * parameters)) of weights, the rest one image's activations); "
                  + "this machine has \(gigabytes(available))")
    }

    /// Parameters of the model this config builds (diffusers' count), computed without building it,
    /// in Double so that no config overflows.
    public var parameters: Double {
        let c = blockOutChannels.map(Double.init), t = Double(timeEmbedDim), last = c.count - 1
        func conv(_ i: Double, _ o: Double, _ k: Double = 3) -> Double { o * i * k * k + o }
        func linear(_ i: Double, _ o: Double) -> Double { i * o + o }
        func norm(_ ch: Double) -> Double { 2 * ch }
        func resnet(_ i: Double, _ o: Double) -> Double {
            norm(i) + conv(i, o) + linear(t, o) + norm(o) + conv(o, o) + (i == o ? 0 : conv(i, o, 1))
        }
        func attention(_ ch: Double) -> Double { norm(ch) + 4 * linear(ch, ch) }
        var total = conv(Double(inChannels), c[0]) + linear(c[0], t) + linear(t, t)
        if let k = numClassEmbeds { total += classEmbedding == .timestep ? linear(c[0], t) + linear(t, t) : Double(k) * t }
        var skips = [c[0]], input = c[0]
        for (i, kind) in downBlockTypes.enumerated() {
            for l in 0..<layersPerBlock {
                total += resnet(l == 0 ? input : c[i], c[i]) + (kind == .attention ? attention(c[i]) : 0)
                skips.append(c[i])
            }
            if i < last { total += conv(c[i], c[i]); skips.append(c[i]) }
            input = c[i]
        }
        if hasMidBlock { total += 2 * resnet(c[last], c[last]) + (addAttention ? attention(c[last]) : 0) }
        for (i, kind) in upBlockTypes.enumerated() {
            let o = c[last - i]
            for l in 0...layersPerBlock {
                total += resnet((l == 0 ? input : o) + (skips.popLast() ?? 0), o) + (kind == .attention ? attention(o) : 0)
            }
            if i < last { total += conv(o, o) }
            input = o
        }
        return total + norm(c[0]) + conv(c[0], Double(outChannels))
    }

    /// Bytes that no use of this config can do without: float32 weights, and one image's input,
    /// first feature map and a resnet's two intermediates at full resolution.
    public var minimumBytes: Double {
        4 * parameters + 4 * Double(sampleSize) * Double(sampleSize) * (Double(inChannels) + 3 * Double(blockOutChannels.first ?? 0))
    }

    /// The JSON diffusers writes for this config (every key, sorted).
    public func json() -> Data {
        let dict: [String: Any] = [
            "_class_name": "UNet2DModel", "_diffusers_version": "0.42.1",
            "sample_size": sampleSize, "in_channels": inChannels, "out_channels": outChannels,
            "center_input_sample": centerInputSample, "time_embedding_type": "positional",
            "time_embedding_dim": timeEmbeddingDim.map { $0 as Any } ?? NSNull(),
            "freq_shift": freqShift == freqShift.rounded() ? Int(freqShift) as Any : Double(freqShift) as Any,
            "flip_sin_to_cos": flipSinToCos,
            "down_block_types": downBlockTypes.map(\.rawValue), "up_block_types": upBlockTypes.map(\.rawValue),
            "mid_block_type": hasMidBlock ? "UNetMidBlock2D" as Any : NSNull(),
            "block_out_channels": blockOutChannels, "layers_per_block": layersPerBlock,
            "mid_block_scale_factor": Double(midBlockScaleFactor), "downsample_padding": downsamplePadding,
            "downsample_type": "conv", "upsample_type": "conv", "dropout": Double(dropout), "act_fn": "silu",
            "attention_head_dim": attentionHeadDim.map { $0 as Any } ?? NSNull(),
            "norm_num_groups": normNumGroups, "attn_norm_num_groups": attnNormNumGroups.map { $0 as Any } ?? NSNull(),
            "norm_eps": Double(normEps), "resnet_time_scale_shift": "default", "add_attention": addAttention,
            "class_embed_type": classEmbedding == .timestep ? "timestep" as Any : NSNull(),
            "num_class_embeds": numClassEmbeds.map { $0 as Any } ?? NSNull(), "num_train_timesteps": NSNull(),
        ]
        return try! JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys])
    }
}

/// "1.5 GB"-style sizes for messages.
func gigabytes(_ bytes: Double) -> String {
    bytes >= 1e9 ? String(format: "%.1f GB", bytes / 1e9) : String(format: "%.1f MB", bytes / 1e6)
}
