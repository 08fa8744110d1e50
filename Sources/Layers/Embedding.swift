import Tensors

/// A lookup table, one learned row per index (PyTorch's `nn.Embedding`): weight [count, dimension].
public final class Embedding: Module {
    public let weight: Tensor

    /// Rows drawn from N(0, 1), as PyTorch initialises them.
    public init(count: Int, dimension: Int, using rng: inout RandomGenerator) {
        weight = Tensor.randomNormal([count, dimension], using: &rng).trainable()
    }

    /// indices -> [indices.count, dimension].
    public func callAsFunction(_ indices: [Int]) -> Tensor { weight.rows(indices) }

    public var parameters: [(name: String, tensor: Tensor)] { [("weight", weight)] }
}
