import Tensors

/// A multilayer perceptron: Linear layers with SiLU between them. widths [2, 64, 1] is
/// 2 -> 64 -> SiLU -> 1. Small problems (toy regressions, 2-D diffusion) use it.
public final class MLP: Module {
    public let layers: [Linear]

    public init(widths: [Int], using rng: inout RandomGenerator) {
        require(widths.count >= 2, "MLP needs at least input and output widths")
        layers = zip(widths, widths.dropFirst()).map { Linear(inputFeatures: $0, outputFeatures: $1, using: &rng) }
    }

    /// x [..., widths.first] -> [..., widths.last].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for (i, layer) in layers.enumerated() {
            h = layer(h)
            if i < layers.count - 1 { h = h.silu() }
        }
        return h
    }

    public var parameters: [(name: String, tensor: Tensor)] { nested("layers", layers) }
}
