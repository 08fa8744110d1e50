/// Define-by-run reverse-mode autodiff.
///
/// Each differentiable op that sees a tracked input makes a `Node` for its result, holding the
/// input nodes and a closure that, given the gradient of the result, adds the gradients of the
/// inputs (`+=`, as in llm.c; pullbacks that write every element of an input's gradient write its
/// first gradient instead, `gradientForWriting`, which saves its zero fill). `backward()` orders
/// the graph reachable from the loss topologically and runs the closures in reverse. Parameters
/// are leaf nodes whose gradient persists until `zeroGradient()`. All gradient rules are in
/// `Ops/`, next to the forward pass they invert.
final class Node {
    let inputs: [Node]
    let count: Int
    /// Adds this node's gradient into its inputs' gradients. Nil for leaves.
    var pullback: ((Storage) -> Void)?
    /// The gradient of the loss with respect to this value, allocated on first use.
    var gradient: Storage?
    let isLeaf: Bool

    init(count: Int, inputs: [Node], pullback: ((Storage) -> Void)?) {
        self.count = count
        self.inputs = inputs
        self.pullback = pullback
        self.isLeaf = pullback == nil
    }

    /// The gradient buffer, zero-filled the first time it is asked for.
    func gradientStorage() -> Storage {
        if let g = gradient { return g }
        let g = Storage(zeros: count)
        gradient = g
        return g
    }

    /// The gradient buffer for a pullback that writes every element of it: the first time, an
    /// uninitialised one to write (`accumulate` false: no zero fill, and the pass that writes it
    /// reads nothing back); after that, the gradient to add to.
    func gradientForWriting() -> (storage: Storage, accumulate: Bool) {
        if let g = gradient { return (g, true) }
        let g = Storage(uninitializedCount: count)
        gradient = g
        return (g, false)
    }

    /// gradient += g, or, the first time, gradient = a copy of g.
    func addGradient(_ g: UnsafePointer<Float>) {
        let (d, add) = gradientForWriting()
        if add { accumulate(d.pointer, g, count: count) } else { copy(g, to: d.pointer, count: count) }
    }
}

/// Whether ops record nodes on this task. Turned off by `withoutGradients`.
enum GradientRecording {
    @TaskLocal static var isOn = true
}

/// Runs `body` without recording: sampling and evaluation make no nodes and keep no activations.
public func withoutGradients<Result>(_ body: () throws -> Result) rethrows -> Result {
    try GradientRecording.$isOn.withValue(false, operation: body)
}

extension Tensor {
    /// This tensor as a trainable leaf: gradients of any loss computed from it accumulate in `gradient`.
    public func trainable() -> Tensor {
        var t = Tensor(shape: shape, storage: storage)
        t.node = Node(count: count, inputs: [], pullback: nil)
        return t
    }

    /// Whether this value takes part in a recorded computation.
    public var requiresGradient: Bool { node != nil }

    /// The accumulated gradient of a trainable tensor (nil before any backward pass reaches it).
    public var gradient: Tensor? {
        guard let g = node?.gradient else { return nil }
        return Tensor(shape: shape, storage: g)
    }

    /// Resets a trainable tensor's gradient to nothing.
    public func zeroGradient() { node?.gradient = nil }

    /// Back-propagates from this tensor. A scalar is seeded with 1; otherwise pass `seed`, the
    /// gradient of some scalar with respect to this tensor. Interior nodes release their gradients
    /// and closures as soon as they have run, so activations are freed during the pass.
    public func backward(seed: Tensor? = nil) {
        guard let root = node else { return }
        let order = topologicalOrder(from: root)
        let g = root.gradientStorage()
        if let seed {
            require(seed.count == count, "seed has \(seed.count) elements, tensor \(count)")
            for i in 0..<count { g.pointer[i] += seed.pointer[i] }
        } else {
            require(count == 1, "backward() without a seed needs a scalar, shape is \(shape)")
            g.pointer[0] += 1
        }
        for n in order.reversed() where !n.isLeaf {
            if let grad = n.gradient { n.pullback?(grad) }
            n.pullback = nil
            n.gradient = nil
        }
    }
}

/// Nodes reachable from `root`, each after all of its inputs.
private func topologicalOrder(from root: Node) -> [Node] {
    var order: [Node] = []
    var seen = Set<ObjectIdentifier>()
    var stack: [(Node, Bool)] = [(root, false)]
    while case let (n, expanded)? = stack.popLast() {
        if expanded { order.append(n); continue }
        if !seen.insert(ObjectIdentifier(n)).inserted { continue }
        stack.append((n, true))
        for i in n.inputs where !seen.contains(ObjectIdentifier(i)) { stack.append((i, false)) }
    }
    return order
}

extension Tensor {
    /// Wraps an op's result: when recording and any input is tracked, the result gets a node whose
    /// pullback is `pullback`. The closure must capture only what the backward pass needs.
    /// `op` names the op for the profiler, which charges the pullback's time and `backwardFlops` to it.
    static func result(_ shape: [Int], _ storage: Storage, inputs: [Tensor], op: String, backwardFlops: Double = 0,
                       pullback: @escaping (Storage) -> Void) -> Tensor {
        var out = Tensor(shape: shape, storage: storage)
        let tracked = inputs.compactMap(\.node)
        if !tracked.isEmpty && GradientRecording.isOn {
            out.node = Node(count: storage.count, inputs: tracked) { g in
                Profiler.measure(op, backward: true, flops: backwardFlops) { pullback(g) }
            }
        }
        return out
    }

    /// The gradient buffer to add into, or nil when this input is not tracked.
    var gradientSink: UnsafeMutablePointer<Float>? { node?.gradientStorage().pointer }
}
