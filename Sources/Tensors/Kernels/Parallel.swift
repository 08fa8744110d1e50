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

/// Runs `body` over `0..<count` split into contiguous chunks, one per core, when the work is big
/// enough to pay for the dispatch (about 1-2 us a call here); otherwise inline. `cost` is the work
/// per index in elements, so that few heavy indices still split.
@inlinable
public func parallelFor(_ count: Int, cost: Int = 1, _ body: @Sendable (Range<Int>) -> Void) {
    let chunks = min(kernelThreads, count)
    if chunks <= 1 || count * cost < 32_768 {
        body(0..<count)
        return
    }
    parallelRun(chunks) { c in
        let lo = count * c / chunks, hi = count * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs body(i) for i in 0..<iterations on the kernels' threads: CKernels' pool, whose workers
/// spin between loops (see pool.c), or, while another loop holds it (a nested or concurrent call),
/// libdispatch's.
public func parallelRun(_ iterations: Int, _ body: @Sendable (Int) -> Void) {
    if iterations == 1 { return body(0) }
    let ran = withoutActuallyEscaping(body) { body in
        withUnsafePointer(to: body) { closure in
            ddpm_parallel_run(Int32(kernelThreads), iterations, { context, index in
                context!.assumingMemoryBound(to: (@Sendable (Int) -> Void).self).pointee(index)
            }, UnsafeMutableRawPointer(mutating: closure))
        }
    }
    if ran == 0 { DispatchQueue.concurrentPerform(iterations: iterations, execute: body) }
}
