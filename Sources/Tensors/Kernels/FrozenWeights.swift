import Foundation

/// Weights in the layout a kernel wants (the direct convolution's packed blocks, Winograd's
/// transformed kernels), made once and kept while the weights cannot change: inside
/// `withFrozenWeights`, around a sampling loop that runs the same network 50 or 1000 times.
/// Outside it every call prepares its weights afresh, as training must (they change each step).
///
/// Entries are keyed by the weight's address, so the weights must outlive the scope unchanged:
/// a model's parameters do; a weight made and freed inside the scope must not be prepared here.
public final class FrozenWeights: @unchecked Sendable {
    @TaskLocal static var current: FrozenWeights?

    struct Key: Hashable {
        let weight: UnsafePointer<Float>
        let layout: String
        let kernels: String
    }

    private var prepared: [Key: Storage] = [:]
    private let lock = NSLock()

    public init() {}

    /// `make()`, or what it made for this weight, layout and kernel set earlier in the scope.
    public static func prepared(_ weight: UnsafePointer<Float>, _ layout: String, _ kernels: KernelSet = .active,
                                make: () -> Storage) -> Storage {
        guard let cache = current else { return make() }
        let key = Key(weight: weight, layout: layout, kernels: kernels.name)
        cache.lock.lock()
        defer { cache.lock.unlock() }
        if let hit = cache.prepared[key] { return hit }
        let made = make()
        cache.prepared[key] = made
        return made
    }
}

/// Runs `body` with the weights that kernels prepare kept in `cache` (see `FrozenWeights`): pass
/// the same cache to every forward pass of a loop through a model whose weights stay as they are.
public func withFrozenWeights<Result>(_ cache: FrozenWeights, _ body: () throws -> Result) rethrows -> Result {
    try FrozenWeights.$current.withValue(cache, operation: body)
}
