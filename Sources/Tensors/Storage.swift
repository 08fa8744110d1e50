import Foundation

/// Contiguous float32 memory shared by tensors. Tensors never alias storage except on purpose
/// (`reshaped`, parameters updated in place by an optimiser); every op writes a fresh one.
///
/// Memory comes from `BufferPool`, so the buffers of one training step are reused by the next
/// instead of being mapped and faulted in again.
public final class Storage: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Uninitialised memory: the caller writes every element.
    public init(uninitializedCount count: Int) {
        self.count = count
        self.pointer = BufferPool.shared.take(count)
    }

    /// Zeros, written by all cores (gradient buffers are the size of activations, and a fill on one
    /// core left the others waiting).
    public convenience init(zeros count: Int) {
        self.init(uninitializedCount: count)
        fill(pointer, with: 0, count: count)
    }

    public convenience init(_ values: [Float]) {
        self.init(uninitializedCount: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public func copy() -> Storage {
        let s = Storage(uninitializedCount: count)
        Tensors.copy(pointer, to: s.pointer, count: count)
        return s
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }

    deinit { BufferPool.shared.give(pointer, count: count) }
}

/// Free buffers keyed by element count. A training step asks for the same sizes every time, so
/// after the first step nearly every request is served from here.
public final class BufferPool: @unchecked Sendable {
    public static let shared = BufferPool(limitBytes: 2 << 30)

    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var heldBytes = 0
    private let limitBytes: Int
    private let lock = NSLock()

    init(limitBytes: Int) { self.limitBytes = limitBytes }

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        lock.lock()
        if let p = free[count]?.popLast() {
            heldBytes -= count * 4
            lock.unlock()
            return p
        }
        lock.unlock()
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    func give(_ p: UnsafeMutablePointer<Float>, count: Int) {
        lock.lock()
        if heldBytes + count * 4 <= limitBytes {
            free[count, default: []].append(p)
            heldBytes += count * 4
            lock.unlock()
        } else {
            lock.unlock()
            UnsafeMutableRawPointer(p).deallocate()
        }
    }
}
