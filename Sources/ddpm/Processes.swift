import Distributed
import Foundation

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
