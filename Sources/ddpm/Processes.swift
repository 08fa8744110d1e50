import Distributed
import Foundation
import Tensors

/// The job's processes (`Communicator.world`), each rank given its share of the host's cores as
/// kernel threads (cores / ranks on the host) unless DDPM_THREADS says otherwise. Call it before
/// any kernel runs: the thread count is read once.
func processes() -> Communicator {
    let world = Communicator.world
    if world.isDistributed && ProcessInfo.processInfo.environment["DDPM_THREADS"] == nil {
        setenv("DDPM_THREADS", String(max(1, ProcessInfo.processInfo.activeProcessorCount / world.ranksOnThisHost)), 1)
    }
    return world
}

/// Runs a command's `body` on this rank of the job (`processes()`); an error on any rank of a
/// distributed job ends the whole job (MPI_Abort), where the other ranks might wait for it forever.
func onEveryRank(_ body: (Communicator) throws -> Void) throws {
    let world = processes()
    do { try body(world) } catch {
        if world.isDistributed { world.abort("\(error)") }
        throw error
    }
}

/// The batches of `Pipeline.generate(count:share:)` from every rank, put back in order on rank 0:
/// `deliver` is its `deliver` on every rank (rank 0 writes its own batches and receives the others'
/// as it reaches them; the other ranks send theirs), `finish()` receives whatever follows rank 0's
/// last batch. `write` runs on rank 0 only, once per batch, in batch order.
final class BatchGatherer {
    let world: Communicator
    let count: Int, batchSize: Int
    let shape: (Int) -> [Int]
    let write: (Tensor) throws -> Void
    var written = 0

    init(_ world: Communicator, count: Int, batchSize: Int, shape: @escaping (Int) -> [Int], write: @escaping (Tensor) throws -> Void) {
        self.world = world; self.count = count; self.batchSize = batchSize; self.shape = shape; self.write = write
    }

    func deliver(_ batch: Range<Int>, _ images: Tensor) throws {
        guard world.isRoot else { return world.send(images.pointer, count: images.count, to: 0, tag: batch.lowerBound / batchSize) }
        try receive(upTo: batch.lowerBound / batchSize)
        try write(images)
        written += 1
    }

    func finish() throws {
        if world.isRoot { try receive(upTo: (count + batchSize - 1) / batchSize) }
    }

    func receive(upTo batch: Int) throws {
        while written < batch {
            let images = Tensor(zeros: shape(min(batchSize, count - written * batchSize)))
            world.receive(into: images.pointer, count: images.count, from: written % world.size, tag: written)
            try write(images)
            written += 1
        }
    }
}
