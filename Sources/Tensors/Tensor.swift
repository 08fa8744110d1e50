import Foundation

/// An n-dimensional float32 array: a shape plus contiguous row-major storage (NCHW for images),
/// plus an autodiff node when it takes part in a recorded computation.
///
/// There are no strides: every op reads and writes contiguous memory, and a layout change is an
/// explicit copy (`transposedLastTwo`). `reshaped` shares storage.
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let storage: Storage
    /// Set when this value depends on a parameter and gradients are being recorded.
    var node: Node?

    public init(shape: [Int], storage: Storage) {
        require(shape.reduce(1, *) == storage.count,
                "shape \(shape) needs \(shape.reduce(1, *)) elements, storage has \(storage.count)")
        self.shape = shape
        self.storage = storage
        self.node = nil
    }

    public init(shape: [Int], _ values: [Float]) {
        self.init(shape: shape, storage: Storage(values))
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, storage: Storage(zeros: shape.reduce(1, *)))
    }

    public init(shape: [Int], repeating value: Float) {
        let s = Storage(uninitializedCount: shape.reduce(1, *))
        s.pointer.update(repeating: value, count: s.count)
        self.init(shape: shape, storage: s)
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }
    public var scalars: [Float] { Array(storage.buffer) }
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer }

    /// The value of a one-element tensor.
    public var item: Float {
        require(count == 1, "item needs one element, shape is \(shape)")
        return storage.pointer[0]
    }

    /// A deep copy, detached from any recorded computation.
    public func copy() -> Tensor { Tensor(shape: shape, storage: storage.copy()) }

    /// The same values, no longer tracked by autodiff.
    public var detached: Tensor { Tensor(shape: shape, storage: storage) }

    /// Items `range` along the first dimension (images of a batch), copied, untracked.
    public func slice(_ range: Range<Int>) -> Tensor {
        require(range.lowerBound >= 0 && range.upperBound <= shape[0], "slice \(range) of \(shape)")
        let per = count / shape[0]
        let s = Storage(uninitializedCount: range.count * per)
        s.pointer.update(from: pointer + range.lowerBound * per, count: range.count * per)
        return Tensor(shape: [range.count] + shape.dropFirst(), storage: s)
    }

    /// Tensors equal in shape after the first dimension, joined along it (a batch of batches), untracked.
    public static func joined(_ parts: [Tensor]) -> Tensor {
        let rest = Array(parts[0].shape.dropFirst())
        require(parts.allSatisfy { Array($0.shape.dropFirst()) == rest }, "joining \(parts.map(\.shape))")
        let s = Storage(uninitializedCount: parts.reduce(0) { $0 + $1.count })
        var offset = 0
        for p in parts { (s.pointer + offset).update(from: p.pointer, count: p.count); offset += p.count }
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + rest, storage: s)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = storage.buffer.prefix(8).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape): [\(shown)\(count > 8 ? ", ..." : "")])"
    }
}

