import ArgumentParser
import Foundation
import Tensors

/// Microbenchmarks of the engine's kernels at U-Net shapes, in GFLOP/s and share of peak.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure kernel speed: sgemm and 3x3 conv2d forward/backward at U-Net shapes.")

    @Flag(help: "Benchmark the kernels (sgemm, conv2d forward and backward).") var ops = false
    @Option(help: "Batch size of the convolution shapes.") var batchSize = 64
    @Option(help: "The machine's float32 peak in GFLOP/s, for the share column (2 Zen 2 cores at 3.33 GHz: 213).")
    var peak = 213.0

    func validate() throws {
        guard ops else { throw ValidationError("say what to benchmark: --ops") }
    }

    func run() throws {
        print("kernel benchmarks, \(kernelThreads) threads, peak \(Int(peak)) GFLOP/s; each the best of several runs")
        print("shape".padding(toLength: 44, withPad: " ", startingAt: 0) + "   ms   GFLOP/s  peak   vs sgemm")
        for n in [512, 2048] {
            let a = Tensor(shape: [n, n], repeating: 0.5), c = Tensor(zeros: [n, n])
            let t = time { gemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: a.pointer, ldb: n, c: c.pointer, ldc: n) }
            report("sgemm \(n)^3", seconds: t, flops: 2 * Double(n * n * n), reference: nil)
        }
        for (channels, size) in [(32, 28), (64, 14), (128, 7), (64, 28), (128, 14)] {
            let g = ConvGeometry(batch: batchSize, channels: channels, height: size, width: size,
                                 outChannels: channels, kernel: 3, stride: 1, padding: 1)
            // the convolution's own product alone, as the yardstick
            let m = g.outChannels, k = g.patch, w = g.batch * g.outPixels
            let wa = Tensor(shape: [m, k], repeating: 0.01), cols = Tensor(shape: [k, w], repeating: 0.5)
            let prod = Tensor(zeros: [m, w])
            let tg = time { gemm(m: m, n: w, k: k, a: wa.pointer, lda: k, b: cols.pointer, ldb: w, c: prod.pointer, ldc: w) }
            let name = "conv3x3 \(channels)->\(channels) \(size)x\(size) b\(batchSize)"
            report("sgemm M=\(m) N=\(w) K=\(k)", seconds: tg, flops: g.flops, reference: nil)
            var rng = RandomGenerator(seed: 1)
            let x = Tensor.randomNormal([g.batch, channels, size, size], using: &rng)
            let weight = Tensor.randomNormal([channels, channels, 3, 3], using: &rng, scale: 0.05)
            let bias = Tensor(zeros: [channels]), y = Tensor(zeros: [g.batch, channels, size, size])
            let tf = time { conv2dForward(g, x: x.pointer, weight: weight.pointer, bias: bias.pointer, y: y.pointer) }
            report(name + " fwd", seconds: tf, flops: g.flops, reference: tg)
            let dx = Tensor(zeros: x.shape), dw = Tensor(zeros: weight.shape), db = Tensor(zeros: [channels])
            let tb = time {
                conv2dBackward(g, x: x.pointer, weight: weight.pointer, dy: y.pointer, dx: dx.pointer,
                               dweight: dw.pointer, dbias: db.pointer)
            }
            report(name + " bwd", seconds: tb, flops: 2 * g.flops, reference: 2 * tg)
        }
    }

    /// The best of several timed runs after one warm-up, in seconds.
    func time(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity, total = 0.0, runs = 0
        while runs < 3 || (total < 1 && runs < 50) {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            let t = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = min(best, t); total += t; runs += 1
        }
        return best
    }

    func report(_ name: String, seconds: Double, flops: Double, reference: Double?) {
        let gflops = flops / seconds / 1e9
        let ratio = reference.map { String(format: "%7.2fx", $0 / seconds) } ?? ""
        print(name.padding(toLength: 44, withPad: " ", startingAt: 0)
              + String(format: " %6.2f  %7.1f  %3.0f%%  ", seconds * 1000, gflops, 100 * gflops / peak) + ratio)
    }
}
