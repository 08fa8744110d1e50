import Tensors

/// A fully connected layer, y = x W^T + b. Weight [out, in] (PyTorch's layout), bias [out].
public final class Linear: Module {
    public let weight: Tensor
    public let bias: Tensor?

    public init(inputFeatures: Int, outputFeatures: Int, bias: Bool = true, using rng: inout RandomGenerator) {
        weight = uniformInit([outputFeatures, inputFeatures], fanIn: inputFeatures, using: &rng)
        self.bias = bias ? uniformInit([outputFeatures], fanIn: inputFeatures, using: &rng) : nil
    }

    /// x [..., in] -> [..., out].
    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight: weight, bias: bias) }

    public var parameters: [(name: String, tensor: Tensor)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }
}

/// diffusers' `TimestepEmbedding`: a sinusoidal projection [N, in] through linear_1, SiLU, linear_2.
public final class TimestepEmbedding: Module {
    public let linear1: Linear, linear2: Linear

    public init(inputFeatures: Int, dimension: Int, using rng: inout RandomGenerator) {
        linear1 = Linear(inputFeatures: inputFeatures, outputFeatures: dimension, using: &rng)
        linear2 = Linear(inputFeatures: dimension, outputFeatures: dimension, using: &rng)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { linear2(linear1(x).silu()) }

    public var parameters: [(name: String, tensor: Tensor)] { nested("linear_1", linear1) + nested("linear_2", linear2) }
}
