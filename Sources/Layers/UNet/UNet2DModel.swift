import Foundation
import Tensors

/// The U-Net of Ho et al. 2020 as diffusers builds it (`UNet2DModel`): predicts the noise (or x_0,
/// or v) in a batch of images at given timesteps.
///
///     sinusoidal(t) -> time_embedding (linear_1, SiLU, linear_2) (+ class_embedding(y)) -> temb
///     x -> conv_in -> down blocks (keeping every intermediate as a skip)
///       -> mid block -> up blocks (each resnet eating one skip) -> GroupNorm, SiLU -> conv_out
///
/// A class-conditional model (`num_class_embeds`, `class_embed_type`) adds the label's embedding
/// to the time embedding, as diffusers does: a row of a table, or the label through the
/// timestep's sinusoidal projection and an MLP of its own.
///
/// Parameter names and layouts are diffusers', so its safetensors load strictly and ours load there.
public final class UNet2DModel: Module {
    public let config: UNetConfig
    public let convIn: Conv2d
    public let timeEmbedding: TimestepEmbedding
    /// `class_embedding` when the config asks for a table (`class_embed_type` null).
    public let classTable: Embedding?
    /// `class_embedding` when the config asks for `"timestep"`.
    public let classMLP: TimestepEmbedding?
    public let downBlocks: [DownBlock2D]
    public let midBlock: MidBlock2D?
    public let upBlocks: [UpBlock2D]
    public let convNormOut: GroupNorm
    public let convOut: Conv2d

    /// A model with PyTorch's default initialisation, seeded.
    public init(config c: UNetConfig, using rng: inout RandomGenerator) {
        config = c
        let channels = c.blockOutChannels, last = channels.count - 1
        convIn = Conv2d(inputChannels: c.inChannels, outputChannels: channels[0], kernelSize: 3, padding: 1, using: &rng)
        timeEmbedding = TimestepEmbedding(inputFeatures: channels[0], dimension: c.timeEmbedDim, using: &rng)

        var down: [DownBlock2D] = [], skipChannels = [channels[0]], input = channels[0]
        for (i, kind) in c.downBlockTypes.enumerated() {
            down.append(DownBlock2D(inputChannels: input, outputChannels: channels[i], config: c,
                                    withAttention: kind == .attention, downsample: i < last, using: &rng))
            skipChannels += Array(repeating: channels[i], count: c.layersPerBlock + (i < last ? 1 : 0))
            input = channels[i]
        }
        downBlocks = down
        midBlock = c.hasMidBlock ? MidBlock2D(channels: channels[last], config: c, using: &rng) : nil

        var up: [UpBlock2D] = []
        for (i, kind) in c.upBlockTypes.enumerated() {
            let output = channels[last - i]
            let skips = (0...c.layersPerBlock).map { _ in skipChannels.removeLast() }
            up.append(UpBlock2D(inputChannels: input, skipChannels: skips, outputChannels: output, config: c,
                                withAttention: kind == .attention, upsample: i < last, using: &rng))
            input = output
        }
        upBlocks = up
        convNormOut = GroupNorm(groups: c.normNumGroups, channels: channels[0], epsilon: c.normEps)
        convOut = Conv2d(inputChannels: channels[0], outputChannels: c.outChannels, kernelSize: 3, padding: 1, using: &rng)
        // made last, so an unconditional config draws the same initial weights as before
        classTable = c.classEmbedding == .table
            ? Embedding(count: c.numClassEmbeds ?? 0, dimension: c.timeEmbedDim, using: &rng) : nil
        classMLP = c.classEmbedding == .timestep
            ? TimestepEmbedding(inputFeatures: channels[0], dimension: c.timeEmbedDim, using: &rng) : nil
    }

    /// The prediction for `sample` [N, C, H, W] at `timesteps` (one per image), without dropout.
    /// A class-conditional model needs `classLabels` (one per image); an unconditional one refuses them.
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], classLabels: [Int]? = nil) -> Tensor {
        var none: RandomGenerator? = nil
        return forward(sample, timesteps: timesteps, classLabels: classLabels, dropout: &none)
    }

    /// The prediction with dropout active, its masks drawn from `rng` (training).
    public func training(_ sample: Tensor, timesteps: [Float], classLabels: [Int]? = nil,
                         using rng: inout RandomGenerator) -> Tensor {
        var g: RandomGenerator? = rng
        defer { rng = g! }
        return forward(sample, timesteps: timesteps, classLabels: classLabels, dropout: &g)
    }

    /// Sets the class embedding to zero, so that the model ignores its labels until it learns them
    /// (a conditional model warm-started from an unconditional one).
    public func zeroClassEmbedding() {
        for p in (classTable.map { [$0.weight] } ?? []) + (classMLP.map { [$0.linear2.weight] + ($0.linear2.bias.map { [$0] } ?? []) } ?? []) {
            p.pointer.update(repeating: 0, count: p.count)
        }
    }

    func forward(_ sample: Tensor, timesteps: [Float], classLabels: [Int]?, dropout rng: inout RandomGenerator?) -> Tensor {
        require(sample.rank == 4 && sample.shape[1] == config.inChannels && timesteps.count == sample.shape[0],
                "UNet: sample \(sample.shape) with \(timesteps.count) timesteps; expected [N, \(config.inChannels), H, W] and N timesteps")
        require((classLabels != nil) == config.isClassConditional,
                config.isClassConditional ? "UNet: a class-conditional model needs class labels" : "UNet: an unconditional model takes no class labels")
        let projection = { (values: [Float]) in
            timestepEmbedding(values, dimension: self.config.blockOutChannels[0], flipSinToCos: self.config.flipSinToCos,
                              downscaleFreqShift: self.config.freqShift)
        }
        var emb = timeEmbedding(projection(timesteps))
        if let classLabels {
            require(classLabels.count == sample.shape[0], "UNet: \(classLabels.count) class labels for \(sample.shape[0]) images")
            if let classTable { emb = emb + classTable(classLabels) }
            if let classMLP { emb = emb + classMLP(projection(classLabels.map(Float.init))) }
        }
        // every resnet applies SiLU to the embedding before its projection: do it once
        let temb = emb.silu()
        var h = convIn(config.centerInputSample ? sample * 2 - 1 : sample)
        var skips = [h]
        for block in downBlocks {
            let (out, blockSkips) = block(h, temb: temb, dropout: &rng)
            h = out
            skips += blockSkips
        }
        if let midBlock { h = midBlock(h, temb: temb, dropout: &rng) }
        for block in upBlocks { h = block(h, skips: &skips, temb: temb, dropout: &rng) }
        return convOut(convNormOut(h, silu: true))
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("conv_in", convIn) + nested("time_embedding", timeEmbedding)
            + nested("class_embedding", classTable) + nested("class_embedding", classMLP)
            + nested("down_blocks", downBlocks) + nested("mid_block", midBlock) + nested("up_blocks", upBlocks)
            + nested("conv_norm_out", convNormOut) + nested("conv_out", convOut)
    }
}

extension UNet2DModel {
    /// Loads diffusers weights strictly, after renaming the attention weights of checkpoints
    /// converted in 2022 (`query`, `key`, `value`, `proj_attn`, possibly 1x1-conv shaped) to
    /// today's `to_q`, `to_k`, `to_v`, `to_out.0`, as diffusers itself does on load.
    public func loadDiffusersWeights(_ tensors: [String: Tensor], from source: URL) throws {
        try load(Self.renamingLegacyAttention(tensors), from: source)
    }

    static let legacyAttentionNames = ["query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"]

    static func renamingLegacyAttention(_ tensors: [String: Tensor]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (name, tensor) in tensors {
            var parts = name.split(separator: ".").map(String.init)
            if parts.count >= 3, parts.dropLast(2).contains("attentions"),
               let modern = legacyAttentionNames[parts[parts.count - 2]] {
                parts[parts.count - 2] = modern
                let t = tensor.rank == 4 && tensor.shape[2] == 1 && tensor.shape[3] == 1
                    ? tensor.reshaped([tensor.shape[0], tensor.shape[1]]) : tensor
                out[parts.joined(separator: ".")] = t
            } else {
                out[name] = tensor
            }
        }
        return out
    }
}
