import CKernels
import Dispatch

/// A set of the hot kernels compiled for one instruction set (CKernels: AVX-512, AVX2 + FMA, or
/// portable C), as one table of C functions. The process picks one set at start from the CPU
/// (`active`; `DDPM_KERNELS=portable|avx2|avx512` lowers the choice); the Swift kernels plan
/// layouts and threads and call the set they are given, `active` unless a test passes another.
public struct KernelSet: @unchecked Sendable, CustomStringConvertible {
    let table: UnsafePointer<ddpm_kernel_set>

    /// The set this process runs.
    public static let active = KernelSet(table: ddpm_kernels())

    /// Every set this CPU can run, best first.
    public static var available: [KernelSet] {
        var count: Int32 = 0
        let list = ddpm_kernel_sets_available(&count)
        return (0..<Int(count)).map { KernelSet(table: list[$0]) }
    }

    /// Why `active` was chosen (the CPU, or DDPM_KERNELS).
    public static var reason: String { String(cString: ddpm_kernels_reason()) }

    /// "avx512", "avx2+fma" or "portable".
    public var name: String { String(cString: table.pointee.name) }
    public var description: String { name }
    /// Floats per vector: 16 or 8.
    public var vectorFloats: Int { table.pointee.vector_floats }
    /// The set's float32 GFLOP/s on one core, measured by a loop of independent FMAs (about 20 ms).
    public func measuredPeakPerCore() -> Double {
        let iterations = 20_000_000 / vectorFloats
        var best = 0.0
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            let sink = table.pointee.fma_loop(iterations)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
            if sink.isFinite { best = max(best, Double(24 * vectorFloats * iterations) / seconds * 1e-9) }
        }
        return best
    }

    var k: ddpm_kernel_set { table.pointee }
}

/// OpenBLAS as loaded: the core it runs and how that was chosen.
public enum BLAS {
    /// OpenBLAS's core name (openblas_get_corename), e.g. "SkylakeX" or "Haswell".
    public static var core: String { String(cString: ddpm_blas_core()) }
    /// "set by OPENBLAS_CORETYPE", "chosen from the CPU's features" or "OpenBLAS's own detection".
    public static var coreReason: String { String(cString: ddpm_blas_core_reason()) }
}
