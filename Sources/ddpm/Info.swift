import ArgumentParser
import Foundation
import Tensors

/// What this process runs on: the CPU, the kernel set picked for it, OpenBLAS's core, and the peak.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the CPU, the kernel set and OpenBLAS core in use, and the measured float32 peak.",
        discussion: """
            Kernels are compiled for AVX-512, AVX2 + FMA and portable C, and the best set the CPU runs is \
            picked at start; DDPM_KERNELS=portable|avx2|avx512 forces a lower one. OpenBLAS is loaded with \
            OPENBLAS_CORETYPE set from the CPU's features unless you set it.
            """)

    @Flag(help: "Print one JSON line.") var json = false

    func run() {
        let machine = Machine.current
        if json {
            print(machine.jsonFields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ").wrappedInBraces)
        } else {
            print(machine.summary)
            print("kernel sets this CPU runs: " + KernelSet.available.map(\.name).joined(separator: ", "))
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
