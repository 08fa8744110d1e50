import Dispatch
import Foundation
import Tensors

/// Batches of a dataset in an order that is a pure function of (seed, batch index): epoch e is a
/// permutation drawn from a generator seeded by (seed, e), batch k takes positions
/// [k B, (k + 1) B) of epoch k / (N / B) (the last partial batch of an epoch is dropped), and each
/// image's horizontal flip is a hash of (seed, epoch, position). So a run resumed at step k sees
/// exactly the batches an uninterrupted run sees, with no loader state to save.
public struct BatchSampler: Sendable {
    public let dataset: ImageDataset
    public let batchSize: Int
    public let seed: UInt64
    public let flip: Bool

    public init(dataset: ImageDataset, batchSize: Int, seed: UInt64, flip: Bool) {
        require(batchSize >= 1 && batchSize <= dataset.count, "batch size \(batchSize) for \(dataset.count) images")
        self.dataset = dataset; self.batchSize = batchSize; self.seed = seed; self.flip = flip
    }

    public var batchesPerEpoch: Int { dataset.count / batchSize }

    /// The permutation of epoch e (Fisher-Yates).
    public func permutation(epoch: Int) -> [Int] {
        var rng = RandomGenerator(seed: seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15) ^ 0x5EED)
        var p = Array(0..<dataset.count)
        for i in stride(from: p.count - 1, to: 0, by: -1) { p.swapAt(i, rng.integer(below: i + 1)) }
        return p
    }

    /// Batch `index` as [B, C, H, W] with its labels, given its epoch's permutation.
    public func batch(_ index: Int, permutation: [Int]) -> Batch {
        let epoch = index / batchesPerEpoch, start = index % batchesPerEpoch * batchSize
        let per = dataset.imageSize, (h, w) = (dataset.height, dataset.width)
        let out = Storage(uninitializedCount: batchSize * per)
        for b in 0..<batchSize {
            let src = dataset.pixels.pointer + permutation[start + b] * per, dst = out.pointer + b * per
            if flip && hash(epoch, start + b) & 1 == 1 {
                for plane in 0..<dataset.channels { for y in 0..<h { for x in 0..<w {
                    dst[(plane * h + y) * w + x] = src[(plane * h + y) * w + (w - 1 - x)]
                } } }
            } else {
                dst.update(from: src, count: per)
            }
        }
        let labels = dataset.labels.map { l in (0..<batchSize).map { l.values[permutation[start + $0]] } }
        return Batch(images: Tensor(shape: [batchSize, dataset.channels, h, w], storage: out), labels: labels)
    }

    private func hash(_ epoch: Int, _ position: Int) -> UInt64 {
        var z = seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(position) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Images [B, C, H, W] in [-1, 1] and, when the dataset has them, their class labels.
public struct Batch: Sendable {
    public let images: Tensor
    public let labels: [Int]?
}

/// Prepares batch k + 1 on another thread while the caller trains on batch k.
public final class BatchPrefetcher: @unchecked Sendable {
    private let sampler: BatchSampler
    private let queue = DispatchQueue(label: "ddpm.prefetch")
    private var next: Int
    private var pending: (Int, DispatchSemaphore, Box)?
    private var epoch = -1, permutation: [Int] = []

    private final class Box: @unchecked Sendable { var batch: Batch? }

    /// Starts at batch `index` (the optimiser step, when resuming).
    public init(_ sampler: BatchSampler, startingAt index: Int) {
        self.sampler = sampler
        next = index
        schedule(index)
    }

    private func schedule(_ index: Int) {
        let done = DispatchSemaphore(value: 0), box = Box()
        pending = (index, done, box)
        queue.async { [self] in
            let e = index / sampler.batchesPerEpoch
            if e != epoch { permutation = sampler.permutation(epoch: e); epoch = e }
            box.batch = sampler.batch(index, permutation: permutation)
            done.signal()
        }
    }

    /// The next batch in order.
    public func nextBatch() -> Batch {
        let (_, done, box) = pending!
        done.wait()
        next += 1
        schedule(next)
        return box.batch!
    }
}
