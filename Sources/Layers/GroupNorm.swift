import Tensors

/// Group normalisation over [N, C, ...] with a learned per-channel scale `weight` and shift
/// `bias` (PyTorch's names), both [C], initialised to 1 and 0.
public final class GroupNorm: Module {
    public let groups: Int
    public let epsilon: Float
    public let weight: Tensor
    public let bias: Tensor

    public init(groups: Int, channels: Int, epsilon: Float = 1e-5) {
        require(channels % groups == 0, "GroupNorm: \(channels) channels do not split into \(groups) groups")
        self.groups = groups
        self.epsilon = epsilon
        weight = Tensor(shape: [channels], repeating: 1).trainable()
        bias = Tensor(zeros: [channels]).trainable()
    }

    /// Normalises x; with `silu`, applies SiLU in the same pass.
    public func callAsFunction(_ x: Tensor, silu: Bool = false) -> Tensor {
        x.groupNorm(groups: groups, gamma: weight, beta: bias, epsilon: epsilon, silu: silu)
    }

    public var parameters: [(name: String, tensor: Tensor)] { [("weight", weight), ("bias", bias)] }
}
