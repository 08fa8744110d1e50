import ArgumentParser
import Distributed
import Foundation
import Tensors

/// What this process runs on: the CPU, the kernel set picked for it, OpenBLAS's core, and the peak.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the CPU, the kernel set and OpenBLAS core in use, and the measured float32 peak.",
        discussion: """
            Kernels are compiled for AVX-512, AVX2 + FMA and portable C, and the best set the CPU runs is \
            picked at start; DDPM_KERNELS=portable|avx2|avx512 forces a lower one. OpenBLAS is loaded with \
            OPENBLAS_CORETYPE set from the CPU's features unless you set it. Under mpirun (mpirun -np K ddpm \
            info) rank 0 also reports the job's processes and checks an all-reduce across them.
            """)

    @Flag(help: "Print one JSON line.") var json = false

    func run() throws {
        let world = Communicator.world
        // every rank adds rank + 1: the sum must be K (K + 1) / 2 on every rank
        let sum = world.sum(Double(world.rank + 1)), expected = Double(world.size * (world.size + 1) / 2)
        guard sum == expected else { world.abort("all-reduce gave \(sum), expected \(expected)") }
        guard world.isRoot else { return }
        let machine = Machine.current
        let processes = world.isDistributed
            ? "processes: \(world.size) (MPI ranks; an all-reduce across them checked)" : "processes: 1 (no MPI: not started by mpirun)"
        if json {
            let fields = machine.jsonFields + [("processes", "\(world.size)")]
            print(fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ").wrappedInBraces)
        } else {
            print(machine.summary)
            print("kernel sets this CPU runs: " + KernelSet.available.map(\.name).joined(separator: ", "))
            print(processes)
        }
    }
}

/// The machine as `ddpm info` and `ddpm bench` report it.
struct Machine {
    let cpu: String
    let kernels: KernelSet
    let blasCore: String
    /// float32 GFLOP/s of all cores with the active set, measured.
    let peak: Double

    static var current: Machine {
        let kernels = KernelSet.active
        return Machine(cpu: cpuModel(), kernels: kernels, blasCore: BLAS.core,
                       peak: kernels.measuredPeakPerCore() * Double(kernelThreads))
    }

    var summary: String {
        """
        CPU: \(cpu), \(kernelThreads) cores
        kernels: \(kernels.name) (\(KernelSet.reason))
        OpenBLAS core: \(blasCore) (\(BLAS.coreReason))
        peak: \(String(format: "%.0f", peak)) GFLOP/s float32 (\(kernelThreads) x \(String(format: "%.1f", peak / Double(kernelThreads))), measured with \(kernels.name) FMAs)
        """
    }

    var jsonFields: [(String, String)] {
        [("cpu", "\"\(cpu)\""), ("kernels", "\"\(kernels.name)\""), ("blas_core", "\"\(blasCore)\""),
         ("measured_peak_gflops", String(format: "%.1f", peak))]
    }

    /// /proc/cpuinfo's model name, or the architecture.
    static func cpuModel() -> String {
        if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
           let name = line.split(separator: ":", maxSplits: 1).last {
            return name.trimmingCharacters(in: .whitespaces)
        }
        #if arch(arm64)
        return "arm64"
        #else
        return "x86_64"
        #endif
    }
}

extension String {
    var wrappedInBraces: String { "{" + self + "}" }
}
