import Foundation
import Testing
import Tensors
import TestSupport

/// The whole program under every kernel set this CPU runs (DDPM_KERNELS), and the OpenBLAS core.
@Suite struct KernelSetTests {
    func sets() throws -> [String] {
        let r = try ddpm(["info"])
        let line = r.out.split(separator: "\n").first { $0.hasPrefix("kernel sets this CPU runs: ") }
        return line.map { $0.dropFirst("kernel sets this CPU runs: ".count).components(separatedBy: ", ") } ?? []
    }

    /// DDIM steps of the bundled model (direct, Winograd and im2col convolutions, small-head
    /// attention, GroupNorm + SiLU) from the same noise agree across sets to float rounding.
    @Test func everySetSamplesTheSame() throws {
        let names = try sets()
        #expect(names.last == "portable", "\(names)")
        let dir = temporaryDirectory()
        var samples: [(String, Tensor)] = []
        for name in names {
            let out = dir.appendingPathComponent("\(name).npy")
            let r = try ddpm(["sample", "--sampler", "ddim", "--steps", "5", "--count", "3", "--seed", "3", "--output", out.path],
                             environment: ["DDPM_KERNELS": name])
            #expect(r.status == 0, "\(r.err)")
            let info = try ddpm(["info"], environment: ["DDPM_KERNELS": name])
            #expect(info.out.contains("kernels: \(name) (DDPM_KERNELS=\(name))"), "\(info.out)")
            samples.append((name, try NPY.readTensor(out)))
        }
        for (name, sample) in samples.dropFirst() {
            let difference = maxAbsDifference(sample, samples[0].1)
            print("DDIM-5 samples, \(name) against \(samples[0].0): largest difference \(difference)")
            #expect(difference < 1e-3, "\(name)")
        }
    }

    /// OpenBLAS runs the core the CPU's features call for, unless OPENBLAS_CORETYPE says otherwise;
    /// a setting below what the CPU runs is kept, and `info` says what the features would choose.
    @Test func blasCore() throws {
        let names = try sets()
        let expected = names.first == "avx512" ? "SkylakeX" : names.first == "avx2+fma" ? "Haswell" : nil
        let plain = try ddpm(["info", "--json"], environment: ["OPENBLAS_CORETYPE": ""])
        if let expected { #expect(plain.out.contains("\"blas_core\": \"\(expected)\""), "\(plain.out)") }
        if names.contains("avx2+fma") {
            let chosen = try ddpm(["info"], environment: ["OPENBLAS_CORETYPE": "Haswell"])
            let note = expected == "SkylakeX" ? "; this CPU's features would choose SkylakeX)" : ")"
            #expect(chosen.out.contains("OpenBLAS core: Haswell (set by OPENBLAS_CORETYPE\(note)"), "\(chosen.out)")
        }
    }
}
