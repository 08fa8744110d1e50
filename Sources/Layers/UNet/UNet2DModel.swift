import Foundation
import Tensors

/// The U-Net of Ho et al. 2020 as diffusers builds it (`UNet2DModel`): predicts the noise (or x_0,
/// or v) in a batch of images at given timesteps.
///
///     sinusoidal(t) -> time_embedding (linear_1, SiLU, linear_2) -> temb
///     x -> conv_in -> down blocks (keeping every intermediate as a skip)
///       -> mid block -> up blocks (each resnet eating one skip) -> GroupNorm, SiLU -> conv_out
///
/// Parameter names and layouts are diffusers', so its safetensors load strictly and ours load there.
public final class UNet2DModel: Module {
    public let config: UNetConfig
    public let convIn: Conv2d
    public let timeLinear1: Linear, timeLinear2: Linear
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
        timeLinear1 = Linear(inputFeatures: channels[0], outputFeatures: c.timeEmbedDim, using: &rng)
        timeLinear2 = Linear(inputFeatures: c.timeEmbedDim, outputFeatures: c.timeEmbedDim, using: &rng)

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
    }

    /// The prediction for `sample` [N, C, H, W] at `timesteps` (one per image), without dropout.
    public func callAsFunction(_ sample: Tensor, timesteps: [Float]) -> Tensor {
        var none: RandomGenerator? = nil
        return forward(sample, timesteps: timesteps, dropout: &none)
    }

    /// The prediction with dropout active, its masks drawn from `rng` (training).
    public func training(_ sample: Tensor, timesteps: [Float], using rng: inout RandomGenerator) -> Tensor {
        var g: RandomGenerator? = rng
        defer { rng = g! }
        return forward(sample, timesteps: timesteps, dropout: &g)
    }

    func forward(_ sample: Tensor, timesteps: [Float], dropout rng: inout RandomGenerator?) -> Tensor {
        precondition(sample.rank == 4 && sample.shape[1] == config.inChannels && timesteps.count == sample.shape[0],
                     "UNet: sample \(sample.shape) with \(timesteps.count) timesteps; expected [N, \(config.inChannels), H, W] and N timesteps")
        let embedding = timestepEmbedding(timesteps, dimension: config.blockOutChannels[0], flipSinToCos: config.flipSinToCos,
                                          downscaleFreqShift: config.freqShift)
        // every resnet applies SiLU to the embedding before its projection: do it once
        let temb = timeLinear2(timeLinear1(embedding).silu()).silu()
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
        nested("conv_in", convIn) + nested("time_embedding.linear_1", timeLinear1) + nested("time_embedding.linear_2", timeLinear2)
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
