import Tensors

/// A square-kernel 2-D convolution. Weight [out, in, k, k] (OIHW), bias [out].
/// Padding is (top, left, bottom, right): symmetric `padding: p` for most layers; TensorFlow's
/// 'SAME' at stride 2 pads only the bottom and right by one (the original DDPM's downsampling).
public final class Conv2d: Module {
    public let weight: Tensor
    public let bias: Tensor?
    public let stride: Int
    public let padding: (top: Int, left: Int, bottom: Int, right: Int)

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: (top: Int, left: Int, bottom: Int, right: Int), bias: Bool = true,
                using rng: inout RandomGenerator) {
        let fanIn = inputChannels * kernelSize * kernelSize
        weight = uniformInit([outputChannels, inputChannels, kernelSize, kernelSize], fanIn: fanIn, using: &rng)
        self.bias = bias ? uniformInit([outputChannels], fanIn: fanIn, using: &rng) : nil
        self.stride = stride
        self.padding = padding
    }

    public convenience init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                            padding: Int = 0, bias: Bool = true, using rng: inout RandomGenerator) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: kernelSize,
                  stride: stride, padding: (padding, padding, padding, padding), bias: bias, using: &rng)
    }

    /// x [N, in, H, W] -> [N, out, Ho, Wo], plus `shift` [N, out] per image and channel and a
    /// `residual` [N, out, Ho, Wo], both added as the convolution writes its output.
    public func callAsFunction(_ x: Tensor, shift: Tensor? = nil, residual: Tensor? = nil) -> Tensor {
        x.conv2d(weight: weight, bias: bias, stride: stride, padding: padding, shift: shift, residual: residual)
    }

    public var parameters: [(name: String, tensor: Tensor)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }
}
