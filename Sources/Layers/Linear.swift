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
