/// Arithmetic ops and their gradients: broadcast add, subtract, multiply; scalar affine; reshape;
/// reductions; the mean squared error.

extension Tensor {
    static func broadcast(_ op: BinaryOperator, _ a: Tensor, _ b: Tensor) -> Tensor {
        guard let plan = BroadcastPlan(a.shape, b.shape) else {
            preconditionFailure("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        let out = Storage(uninitializedCount: plan.shape.reduce(1, *))
        let name = "\(op)"
        Profiler.measure(name) { broadcastForward(op, plan, a.pointer, b.pointer, out.pointer) }
        let na = a.node, nb = b.node
        // multiply needs the other operand's values; add and subtract need none
        let sa = op == .multiply && nb != nil ? a.storage : nil
        let sb = op == .multiply && na != nil ? b.storage : nil
        return result(plan.shape, out, inputs: [a, b], op: name) { g in
            if let na {
                broadcastBackward(plan, operandIsA: true, scale: 1, g.pointer, factor: sb?.pointer,
                                  na.gradientStorage().pointer)
            }
            if let nb {
                broadcastBackward(plan, operandIsA: false, scale: op == .subtract ? -1 : 1, g.pointer,
                                  factor: sa?.pointer, nb.gradientStorage().pointer)
            }
        }
    }

    /// Elementwise with NumPy broadcasting, e.g. [N, C, H, W] + [N, C, 1, 1].
    public static func + (a: Tensor, b: Tensor) -> Tensor { broadcast(.add, a, b) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { broadcast(.subtract, a, b) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { broadcast(.multiply, a, b) }

    /// x * scale + shift.
    public func affine(scale: Float, shift: Float = 0) -> Tensor {
        let out = Storage(uninitializedCount: count)
        Profiler.measure("affine") { affineForward(pointer, scale: scale, shift: shift, out.pointer, count: count) }
        let n = node
        return Tensor.result(shape, out, inputs: [self], op: "affine") { g in
            accumulate(n!.gradientStorage().pointer, g.pointer, scale: scale, count: g.count)
        }
    }

    public static func * (a: Tensor, s: Float) -> Tensor { a.affine(scale: s) }
    public static func * (s: Float, a: Tensor) -> Tensor { a.affine(scale: s) }
    public static func / (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1 / s) }
    public static func + (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: s) }
    public static func - (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: -s) }
    public static prefix func - (a: Tensor) -> Tensor { a.affine(scale: -1) }

    /// The same storage under another shape (-1 infers one dimension).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var dims = newShape
        if let i = dims.firstIndex(of: -1) {
            dims[i] = count / dims.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
        }
        require(dims.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        let n = node
        return Tensor.result(dims, storage, inputs: [self], op: "reshape") { g in n!.addGradient(g.pointer) }
    }

    /// The mean of all elements, a scalar.
    public func mean() -> Tensor {
        let value = Float(sumOfElements(pointer, count: count) / Double(count))
        let n = node, total = count
        return Tensor.result([], Storage([value]), inputs: [self], op: "mean") { g in
            let d = n!.gradientStorage().pointer, v = g.pointer[0] / Float(total)
            for i in 0..<total { d[i] += v }
        }
    }

    /// The sum of all elements, a scalar.
    public func sum() -> Tensor { mean() * Float(count) }
}

/// mean((prediction - target)^2): the DDPM training loss (Ho et al., eq. 14).
public func meanSquaredError(_ prediction: Tensor, _ target: Tensor) -> Tensor {
    require(prediction.shape == target.shape, "MSE of shapes \(prediction.shape) and \(target.shape)")
    let diff = prediction - target
    return (diff * diff).mean()
}
