import CMPI
import Foundation

/// The processes of a data-parallel job: MPI's world, rank r of K, as `mpirun -np K ddpm ...`
/// starts them. Without mpirun the process is alone (rank 0 of 1) and MPI is never initialised, so
/// `ddpm` behaves as it always has. Only the command line uses this module; the library's modules
/// know nothing of MPI.
///
/// MPI's default error handler stays: an error in any rank, or a rank that exits with an error
/// while the others wait in a collective, ends the whole job (mpirun kills the rest) instead of
/// leaving it hanging.
public final class Communicator: @unchecked Sendable {
    /// This job's processes.
    public static let world = Communicator()

    public let rank: Int
    public let size: Int
    /// Whether MPI was initialised (the process was started by mpirun).
    public let isDistributed: Bool

    init() {
        let environment = ProcessInfo.processInfo.environment
        guard ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"].contains(where: { environment[$0] != nil }) else {
            (rank, size, isDistributed) = (0, 1, false)
            return
        }
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(ddpm_mpi_world(), &r)
        MPI_Comm_size(ddpm_mpi_world(), &s)
        (rank, size, isDistributed) = (Int(r), Int(s), true)
        atexit { _ = MPI_Finalize() }
    }

    /// Rank 0, which alone writes checkpoints, logs, samples and progress.
    public var isRoot: Bool { rank == 0 }

    /// Replaces `buffer[0 ..< count]` on every rank by its sum over the ranks (MPI_Allreduce, in place).
    public func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        guard isDistributed else { return }
        var offset = 0
        while offset < count {  // MPI counts are Int32
            let n = min(count - offset, Int(Int32.max))
            MPI_Allreduce(ddpm_mpi_in_place(), buffer + offset, Int32(n), ddpm_mpi_float(), ddpm_mpi_sum(), ddpm_mpi_world())
            offset += n
        }
    }

    /// The element-wise sum of `values` over the ranks, on every rank.
    public func sum(_ values: [Double]) -> [Double] {
        guard isDistributed else { return values }
        var v = values
        v.withUnsafeMutableBufferPointer { p in
            _ = MPI_Allreduce(ddpm_mpi_in_place(), p.baseAddress, Int32(p.count), ddpm_mpi_double(), ddpm_mpi_sum(), ddpm_mpi_world())
        }
        return v
    }

    /// The sum of `value` over the ranks, on every rank.
    public func sum(_ value: Double) -> Double {
        guard isDistributed else { return value }
        var v = value
        MPI_Allreduce(ddpm_mpi_in_place(), &v, 1, ddpm_mpi_double(), ddpm_mpi_sum(), ddpm_mpi_world())
        return v
    }

    /// The largest `value` over the ranks, on every rank.
    public func maximum(_ value: Double) -> Double {
        guard isDistributed else { return value }
        var v = value
        MPI_Allreduce(ddpm_mpi_in_place(), &v, 1, ddpm_mpi_double(), ddpm_mpi_max(), ddpm_mpi_world())
        return v
    }

    /// Processes of this job on this host (mpirun's local size; 1 alone).
    public var ranksOnThisHost: Int {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? size
    }

    /// Sends `count` floats to rank `to`, labelled `tag`; returns when the buffer may be reused.
    public func send(_ buffer: UnsafePointer<Float>, count: Int, to rank: Int, tag: Int) {
        precondition(count <= Int(Int32.max), "one message holds at most 2^31 floats")
        MPI_Send(buffer, Int32(count), ddpm_mpi_float(), Int32(rank), Int32(tag % 32_767), ddpm_mpi_world())
    }

    /// Receives `count` floats sent to this rank by rank `from` with `tag`.
    public func receive(into buffer: UnsafeMutablePointer<Float>, count: Int, from rank: Int, tag: Int) {
        MPI_Recv(buffer, Int32(count), ddpm_mpi_float(), Int32(rank), Int32(tag % 32_767), ddpm_mpi_world(), nil)
    }

    /// Ends the whole job: this rank prints why, and MPI stops the others.
    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("rank \(rank) of \(size): \(message)\n".utf8))
        if isDistributed { MPI_Abort(ddpm_mpi_world(), 1) }
        exit(1)
    }
}
