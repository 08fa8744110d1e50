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

/// acc[j] += sum_i x[i cols + j] for x [rows, cols] (a linear layer's bias gradient: dy's column
/// sums), the rows split across cores, each core's sums kept apart and added at the end.
public func addColumnSums(_ x: UnsafePointer<Float>, rows: Int, columns: Int, into acc: UnsafeMutablePointer<Float>,
                          kernels: KernelSet = .active) {
    let workers = min(kernelThreads, max(1, rows * columns / 65_536))
    if workers == 1 { return kernels.k.add_column_sums(x, rows, columns, columns, acc) }
    let partials = Storage(zeros: workers * columns)
    let px = SharedPointer(x), pp = SharedPointer(partials.pointer)
    parallelRun(workers) { w in
        let lo = rows * w / workers, hi = rows * (w + 1) / workers
        kernels.k.add_column_sums(px + lo * columns, hi - lo, columns, columns, pp + w * columns)
    }
    for w in 0..<workers { kernels.k.add_column_sums(partials.pointer + w * columns, 1, columns, columns, acc) }
}
