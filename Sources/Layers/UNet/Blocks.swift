import Tensors

/// The building blocks of diffusers' `UNet2DModel` (the DDPM paper's U-Net), each a `final class`
/// whose fields carry diffusers' parameter names. Shapes: x [N, C, H, W]; the time embedding after
/// SiLU, `temb` [N, T].
///
/// Dropout needs randomness only while training: blocks take `dropout: inout RandomGenerator?`,
/// nil when sampling.

/// ResnetBlock2D: norm1, SiLU, conv1, + time_emb_proj(SiLU(temb)), norm2, SiLU, dropout, conv2,
/// + the input (through a 1x1 conv_shortcut when channels change), / output_scale_factor.
public final class ResnetBlock2D: Module {
    public let norm1: GroupNorm, conv1: Conv2d, timeEmbProj: Linear
    public let norm2: GroupNorm, conv2: Conv2d, convShortcut: Conv2d?
    public let dropout: Float, outputScaleFactor: Float

    public init(inputChannels: Int, outputChannels: Int, timeChannels: Int, groups: Int, epsilon: Float,
                dropout: Float, outputScaleFactor: Float, using rng: inout RandomGenerator) {
        norm1 = GroupNorm(groups: groups, channels: inputChannels, epsilon: epsilon)
        conv1 = Conv2d(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: 3, padding: 1, using: &rng)
        timeEmbProj = Linear(inputFeatures: timeChannels, outputFeatures: outputChannels, using: &rng)
        norm2 = GroupNorm(groups: groups, channels: outputChannels, epsilon: epsilon)
        conv2 = Conv2d(inputChannels: outputChannels, outputChannels: outputChannels, kernelSize: 3, padding: 1, using: &rng)
        convShortcut = inputChannels == outputChannels ? nil
            : Conv2d(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: 1, using: &rng)
        self.dropout = dropout
        self.outputScaleFactor = outputScaleFactor
    }

    /// A resnet with the config's groups, epsilon, time-embedding width and dropout.
    public convenience init(inputChannels: Int, outputChannels: Int, config c: UNetConfig, outputScaleFactor: Float = 1,
                            using rng: inout RandomGenerator) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, timeChannels: c.timeEmbedDim,
                  groups: c.normNumGroups, epsilon: c.normEps, dropout: c.dropout, outputScaleFactor: outputScaleFactor, using: &rng)
    }

    /// The adds (time embedding after conv1, the input after conv2) happen inside the convolutions.
    public func callAsFunction(_ x: Tensor, temb: Tensor, dropout rng: inout RandomGenerator?) -> Tensor {
        var h = conv1(norm1(x, silu: true), shift: timeEmbProj(temb))
        h = norm2(h, silu: true)
        if dropout > 0, var g = rng { h = h.dropout(dropout, using: &g); rng = g }
        let out = conv2(h, residual: convShortcut?(x) ?? x)
        return outputScaleFactor == 1 ? out : out / outputScaleFactor
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("norm1", norm1) + nested("conv1", conv1) + nested("time_emb_proj", timeEmbProj)
            + nested("norm2", norm2) + nested("conv2", conv2) + nested("conv_shortcut", convShortcut)
    }
}

/// Self-attention over the pixels of a feature map (diffusers' `Attention` as UNet2D uses it):
/// group_norm, then per pixel to_q, to_k, to_v, multi-head softmax(QK^T / sqrt(d)) V, to_out.0,
/// plus the input, / rescale_output_factor.
public final class SpatialAttention: Module {
    public let groupNorm: GroupNorm
    public let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    public let heads: Int, rescaleOutputFactor: Float

    public init(channels: Int, headDim: Int?, groups: Int, epsilon: Float, rescaleOutputFactor: Float,
                using rng: inout RandomGenerator) {
        groupNorm = GroupNorm(groups: groups, channels: channels, epsilon: epsilon)
        toQ = Linear(inputFeatures: channels, outputFeatures: channels, using: &rng)
        toK = Linear(inputFeatures: channels, outputFeatures: channels, using: &rng)
        toV = Linear(inputFeatures: channels, outputFeatures: channels, using: &rng)
        toOut = Linear(inputFeatures: channels, outputFeatures: channels, using: &rng)
        heads = channels / (headDim ?? channels)
        self.rescaleOutputFactor = rescaleOutputFactor
    }

    /// An attention with the config's head width and epsilon (`groups` defaults to the config's).
    public convenience init(channels: Int, config c: UNetConfig, groups: Int? = nil, rescaleOutputFactor: Float = 1,
                            using rng: inout RandomGenerator) {
        self.init(channels: channels, headDim: c.attentionHeadDim, groups: groups ?? c.normNumGroups, epsilon: c.normEps,
                  rescaleOutputFactor: rescaleOutputFactor, using: &rng)
    }

    /// Sampling takes `pixelAttention`: q, k and v as one product, no transposes, to_out written
    /// onto the residual; a recorded pass takes the layers one by one.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let out: Tensor
        if isRecordingGradients {
            let tokens = groupNorm(x).reshaped([n, c, h * w]).transposedLastTwo()  // [N, HW, C]
            let attended = scaledDotProductAttention(query: toQ(tokens), key: toK(tokens), value: toV(tokens), heads: heads)
            out = toOut(attended).transposedLastTwo().reshaped([n, c, h, w]) + x
        } else {
            let qkv = FrozenWeights.prepared(toQ.weight.pointer, "qkv") { stackedQKV() }
            out = pixelAttention(groupNorm(x), qkvWeight: qkv.pointer, qkvBias: qkv.pointer + 3 * c * c,
                                 outWeight: toOut.weight, outBias: toOut.bias, heads: heads, residual: x)
        }
        return rescaleOutputFactor == 1 ? out : out / rescaleOutputFactor
    }

    /// to_q, to_k and to_v's weights stacked [3C, C], then their biases [3C] (zero where absent).
    func stackedQKV() -> Storage {
        let c = toQ.weight.shape[0]
        let stacked = Storage(zeros: 3 * c * c + 3 * c)
        for (i, layer) in [toQ, toK, toV].enumerated() {
            (stacked.pointer + i * c * c).update(from: layer.weight.pointer, count: c * c)
            if let bias = layer.bias { (stacked.pointer + 3 * c * c + i * c).update(from: bias.pointer, count: c) }
        }
        return stacked
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("group_norm", groupNorm) + nested("to_q", toQ) + nested("to_k", toK)
            + nested("to_v", toV) + nested("to_out.0", toOut)
    }
}

/// DownBlock2D and AttnDownBlock2D: resnets (each followed by an attention in the Attn kind), then
/// a stride-2 conv (downsamplers.0.conv) unless last. Returns the output and every intermediate,
/// which the up path consumes as skip connections.
public final class DownBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let attentions: [SpatialAttention]
    public let downsampler: Conv2d?

    public init(inputChannels: Int, outputChannels: Int, config c: UNetConfig, withAttention: Bool, downsample: Bool,
                using rng: inout RandomGenerator) {
        var resnets: [ResnetBlock2D] = [], attentions: [SpatialAttention] = []
        for i in 0..<c.layersPerBlock {
            resnets.append(ResnetBlock2D(inputChannels: i == 0 ? inputChannels : outputChannels, outputChannels: outputChannels,
                                         config: c, using: &rng))
            if withAttention { attentions.append(SpatialAttention(channels: outputChannels, config: c, using: &rng)) }
        }
        self.resnets = resnets
        self.attentions = attentions
        // downsample_padding 0 is TensorFlow's 'SAME' at stride 2: pad bottom and right only
        let p = c.downsamplePadding
        downsampler = downsample
            ? Conv2d(inputChannels: outputChannels, outputChannels: outputChannels, kernelSize: 3, stride: 2,
                     padding: p == 0 ? (0, 0, 1, 1) : (p, p, p, p), using: &rng)
            : nil
    }

    public func callAsFunction(_ x: Tensor, temb: Tensor, dropout rng: inout RandomGenerator?) -> (Tensor, [Tensor]) {
        var h = x, skips: [Tensor] = []
        for (i, resnet) in resnets.enumerated() {
            h = resnet(h, temb: temb, dropout: &rng)
            if !attentions.isEmpty { h = attentions[i](h) }
            skips.append(h)
        }
        if let downsampler { h = downsampler(h); skips.append(h) }
        return (h, skips)
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("resnets", resnets) + nested("attentions", attentions) + nested("downsamplers.0.conv", downsampler)
    }
}

/// UNetMidBlock2D: resnet, attention, resnet at the lowest resolution.
public final class MidBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let attention: SpatialAttention?

    public init(channels: Int, config c: UNetConfig, using rng: inout RandomGenerator) {
        let first = ResnetBlock2D(inputChannels: channels, outputChannels: channels, config: c,
                                  outputScaleFactor: c.midBlockScaleFactor, using: &rng)
        attention = c.addAttention
            ? SpatialAttention(channels: channels, config: c, groups: c.attnNormNumGroups,
                               rescaleOutputFactor: c.midBlockScaleFactor, using: &rng)
            : nil
        resnets = [first, ResnetBlock2D(inputChannels: channels, outputChannels: channels, config: c,
                                        outputScaleFactor: c.midBlockScaleFactor, using: &rng)]
    }

    public func callAsFunction(_ x: Tensor, temb: Tensor, dropout rng: inout RandomGenerator?) -> Tensor {
        var h = resnets[0](x, temb: temb, dropout: &rng)
        if let attention { h = attention(h) }
        return resnets[1](h, temb: temb, dropout: &rng)
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("resnets", resnets) + nested("attentions.0", attention)
    }
}

/// UpBlock2D and AttnUpBlock2D: layers_per_block + 1 resnets, each fed the running features
/// concatenated with the next skip connection (attention after each in the Attn kind), then
/// nearest 2x upsampling and a conv (upsamplers.0.conv) unless last.
public final class UpBlock2D: Module {
    public let resnets: [ResnetBlock2D]
    public let attentions: [SpatialAttention]
    public let upsampler: Conv2d?

    /// `skipChannels[i]` is the channel count of the skip that resnet i receives.
    public init(inputChannels: Int, skipChannels: [Int], outputChannels: Int, config c: UNetConfig, withAttention: Bool,
                upsample: Bool, using rng: inout RandomGenerator) {
        var resnets: [ResnetBlock2D] = [], attentions: [SpatialAttention] = []
        for (i, skip) in skipChannels.enumerated() {
            resnets.append(ResnetBlock2D(inputChannels: (i == 0 ? inputChannels : outputChannels) + skip, outputChannels: outputChannels,
                                         config: c, using: &rng))
            if withAttention { attentions.append(SpatialAttention(channels: outputChannels, config: c, using: &rng)) }
        }
        self.resnets = resnets
        self.attentions = attentions
        upsampler = upsample
            ? Conv2d(inputChannels: outputChannels, outputChannels: outputChannels, kernelSize: 3, padding: 1, using: &rng)
            : nil
    }

    /// `skips` are consumed from the end, most recent first.
    public func callAsFunction(_ x: Tensor, skips: inout [Tensor], temb: Tensor, dropout rng: inout RandomGenerator?) -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            h = resnet(concatChannels([h, skips.removeLast()]), temb: temb, dropout: &rng)
            if !attentions.isEmpty { h = attentions[i](h) }
        }
        if let upsampler { h = upsampler(h.upsampledNearest2x()) }
        return h
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        nested("resnets", resnets) + nested("attentions", attentions) + nested("upsamplers.0.conv", upsampler)
    }
}
