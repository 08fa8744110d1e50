import CKernels
import Dispatch
import Foundation

/// A raw pointer that may cross into `concurrentPerform`'s `@Sendable` closures. Every kernel that
/// splits work across cores goes through this one type, so the unsafety lives in one place:
/// callers guarantee that chunks write disjoint memory.
public struct SharedPointer<Element>: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Element>
    @inlinable public init(_ base: UnsafeMutablePointer<Element>) { self.base = base }
    @inlinable public init(_ base: UnsafePointer<Element>) { self.base = UnsafeMutablePointer(mutating: base) }
    @inlinable public subscript(i: Int) -> Element {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }
    @inlinable public static func + (p: SharedPointer, offset: Int) -> UnsafeMutablePointer<Element> { p.base + offset }
}

/// How many chunks our own kernels split work into: the cores, or `DDPM_THREADS` (each of K MPI
/// ranks on a host takes cores / K). Read once, at first use.
public let kernelThreads = max(1, ProcessInfo.processInfo.environment["DDPM_THREADS"].flatMap(Int.init)
                                   ?? ProcessInfo.processInfo.activeProcessorCount)

/// Runs `body` over `0..<count` split into contiguous chunks when the work is big enough to pay for
/// the dispatch (about 1-2 us a call here); otherwise inline. `cost` is the work per index in
/// elements, so that few heavy indices still split. The cores claim chunks in turn, up to four
/// each and none under 2^17 elements of work. With one chunk per core, the core that started late
/// or ran slower kept the other waiting for 5% of these loops' time in a fmnist training run;
/// with chunks claimed in turn, 3.6%.
@inlinable
public func parallelFor(_ count: Int, cost: Int = 1, _ body: @Sendable (Range<Int>) -> Void) {
    let work = count * cost
    if kernelThreads == 1 || count < 2 || work < 32_768 {
        body(0..<count)
        return
    }
    let chunks = min(count, max(kernelThreads, min(4 * kernelThreads, work >> 17)))
    parallelRun(chunks) { c in
        let lo = count * c / chunks, hi = count * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs body(i) for i in 0..<iterations on the kernels' threads, each thread claiming the next i
/// as it finishes one: CKernels' pool, whose workers spin between loops (see pool.c), or, while
/// another loop holds it (a nested or concurrent call), libdispatch's. In turn on this thread when
/// there is one kernel thread.
public func parallelRun(_ iterations: Int, _ body: @Sendable (Int) -> Void) {
    if iterations == 1 || kernelThreads == 1 {
        for i in 0..<iterations { body(i) }
        return
    }
    let ran = withoutActuallyEscaping(body) { body in
        withUnsafePointer(to: body) { closure in
            ddpm_parallel_run(Int32(kernelThreads), iterations, { context, index in
                context!.assumingMemoryBound(to: (@Sendable (Int) -> Void).self).pointee(index)
            }, UnsafeMutableRawPointer(mutating: closure))
        }
    }
    if ran == 0 { DispatchQueue.concurrentPerform(iterations: iterations, execute: body) }
}

/// Piece indices 0, 1, 2, ... handed to whichever worker asks next: for loops whose workers each
/// keep their own scratch (reused piece after piece in that core's cache) but take pieces in turn,
/// so that a worker that starts late or runs slower takes fewer.
public final class Claims: @unchecked Sendable {
    public let count: Int
    private let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)

    public init(_ count: Int) {
        self.count = count
        next.initialize(to: 0)
    }
    deinit { next.deallocate() }

    /// The next unclaimed piece, or nil when all are taken.
    public func claim() -> Int? {
        let i = ddpm_claim(next)
        return i < count ? i : nil
    }
}
