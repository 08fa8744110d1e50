/// Reductions, in the active kernel set's vectors with four accumulators (CKernels'
/// family/reduction.h). Swift never reassociates float additions, so a plain `s += x[i]` loop runs
/// at one add per 3 cycles; these run 13x faster on cached data (measured). Summation order
/// differs from a sequential loop by rounding only.

/// x[0] + ... + x[n-1].
public func sum(_ x: UnsafePointer<Float>, count n: Int) -> Float { KernelSet.active.k.sum(x, n) }

/// sum_i x[i] y[i].
public func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) -> Float { KernelSet.active.k.dot(x, y, n) }

/// Sum of many elements, in float chunks of 4096 added in Double (losses, means).
public func sumOfElements(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var total = 0.0, i = 0
    while i < count {
        let n = min(4096, count - i)
        total += Double(sum(x + i, count: n))
        i += n
    }
    return total
}
