import Dispatch

/// Per-op accounting of time and FLOPs, forward and backward, by op kind. Off (one nil check per
/// op) unless installed for a run: `Profiler.$current.withValue(profiler) { ... }`. FLOPs count a
/// multiply-add as 2 and, like torch's FlopCounter, only the matrix products (linear, conv2d,
/// attention); other ops report time only.
public final class Profiler: @unchecked Sendable {
    /// The profiler installed for the task (or thread) running the ops, which call it from that
    /// thread only. Ops that run elsewhere meanwhile (tests in parallel) are not charged to it.
    @TaskLocal public static var current: Profiler?

    public struct Entry: Sendable {
        public var seconds = 0.0, flops = 0.0, calls = 0
        public init() {}
    }

    public private(set) var forward: [String: Entry] = [:]
    public private(set) var backward: [String: Entry] = [:]
    /// How many times each convolution's geometry ran forward: the shapes a model's passes use.
    public private(set) var convolutions: [ConvGeometry: Int] = [:]

    public init() {}

    public var forwardFlops: Double { forward.values.reduce(0) { $0 + $1.flops } }
    public var backwardFlops: Double { backward.values.reduce(0) { $0 + $1.flops } }

    func record(_ op: String, backward isBackward: Bool, flops: Double, seconds: Double) {
        if isBackward {
            backward[op, default: Entry()].seconds += seconds
            backward[op, default: Entry()].flops += flops
            backward[op, default: Entry()].calls += 1
        } else {
            forward[op, default: Entry()].seconds += seconds
            forward[op, default: Entry()].flops += flops
            forward[op, default: Entry()].calls += 1
        }
    }

    static func noteConvolution(_ g: ConvGeometry) { current?.convolutions[g, default: 0] += 1 }

    /// Runs `body`, charging its time and `flops` to `op` when a profiler is installed.
    @inline(__always)
    static func measure<T>(_ op: String, backward: Bool = false, flops: @autoclosure () -> Double = 0, _ body: () -> T) -> T {
        guard let p = current else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        p.record(op, backward: backward, flops: flops(), seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        return result
    }
}
