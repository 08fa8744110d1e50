import ArgumentParser
import Diffusion
import Foundation
import Layers
import Tensors

enum KernelFamily: String, ExpressibleByArgument, CaseIterable {
    case sgemm, conv, attention
}

/// Speed: a preset U-Net's training steps and gradient-free forward passes, or the kernels alone.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed: a preset U-Net (training step and forward pass) or the kernels (--ops).",
        discussion: """
            With --preset, times training steps (forward, MSE loss, backward, AdamW) and gradient-free \
            forward passes on random data after warm-up, and prints images/s, GFLOP/s from the model's \
            own FLOP count (a multiply-add is 2; matrix products only, as torch's FlopCounter), the share \
            of the machine's peak, and the peak memory (max RSS) of training. With --ops --only conv \
            --preset NAME, times that U-Net's own 3x3 convolutions with every algorithm, and how far the \
            algorithm the policy picks for each is from the fastest.
            """)

    @Flag(help: "Benchmark the kernels (sgemm, conv2d forward and backward, attention).") var ops = false
    @Option(help: "With --ops, only one family of kernels.") var only: KernelFamily?
    @Option(help: "Benchmark this preset's U-Net: tiny, fmnist or cifar10.") var preset: UNetConfig.Preset?
    @Option(help: "Batch size.") var batchSize = 64
    @Option(help: "Timed training steps (forward passes: twice as many).") var steps = 5
    @Flag(help: "Print one JSON line instead of a table.") var json = false
    @Flag(help: "Print where the time goes, per op kind, forward and backward.") var profile = false
    @Option(help: "The machine's float32 peak in GFLOP/s, for the share column. Default: measured with the active kernel set's FMAs on every core.")
    var peak: Double?

    func validate() throws {
        guard ops || preset != nil else { throw ValidationError("say what to benchmark: --ops or --preset NAME") }
        guard only == nil || ops else { throw ValidationError("--only goes with --ops") }
        guard !ops || preset == nil || only == .conv else {
            throw ValidationError("--ops with --preset times that preset's 3x3 convolutions: add --only conv")
        }
        guard batchSize >= 1, steps >= 1 else { throw ValidationError("--batch-size and --steps must be at least 1") }
    }

    func run() throws {
        let machine = Machine.current
        let peak = self.peak ?? machine.peak
        if !json { print(machine.summary + (self.peak == nil ? "" : "\npeak for the share column: \(Int(peak)) GFLOP/s (--peak)")) }
        if let preset, !ops { return try benchModel(preset, machine: machine, peak: peak) }
        runOps(peak: peak)
    }

    func benchModel(_ preset: UNetConfig.Preset, machine: Machine, peak: Double) throws {
        var rng = RandomGenerator(seed: 0)
        let config = preset.config
        let unet = UNet2DModel(config: config, using: &rng)
        let optimizer = AdamW(parameters: unet.parameterTensors, learningRate: 1e-4)
        let shape = [batchSize, config.inChannels, config.sampleSize, config.sampleSize]
        let x = Tensor.randomNormal(shape, using: &rng), target = Tensor.randomNormal(shape, using: &rng)
        let timesteps = (0..<batchSize).map { _ in Float(rng.integer(below: 1000)) }

        func trainStep() {
            unet.zeroGradients()
            diffusionLoss(prediction: unet.training(x, timesteps: timesteps, using: &rng), target: target).backward()
            optimizer.update()
        }
        // forward passes as sampling runs them: weights prepared once for all the passes
        let prepared = FrozenWeights()
        func forward() { _ = withFrozenWeights(prepared) { withoutGradients { unet(x, timesteps: timesteps) } } }

        // the model's own FLOP count, from one recorded step
        let counter = Profiler()
        Profiler.$current.withValue(counter) { trainStep() }
        let forwardFlops = counter.forwardFlops / Double(batchSize), trainFlops = (counter.forwardFlops + counter.backwardFlops) / Double(batchSize)

        trainStep()  // warm-up: buffers pooled, BLAS threads started
        let trainSeconds = time(runs: steps) { trainStep() }
        let peakRSS = peakResidentMegabytes()
        forward()
        let forwardSeconds = time(runs: 2 * steps) { forward() }

        let trainRate = Double(batchSize) / trainSeconds, forwardRate = Double(batchSize) / forwardSeconds
        let trainGflops = trainRate * trainFlops / 1e9, forwardGflops = forwardRate * forwardFlops / 1e9
        if json {
            let fields: [(String, Any)] = [
                ("preset", "\"\(preset.rawValue)\""), ("batch_size", batchSize), ("threads", kernelThreads),
                ("parameters", unet.parameterCount),
                ("train_images_per_s", fmt(trainRate)), ("forward_images_per_s", fmt(forwardRate)),
                ("train_gflops", fmt(trainGflops)), ("forward_gflops", fmt(forwardGflops)),
                ("train_gflop_per_image", fmt(trainFlops / 1e9)), ("forward_gflop_per_image", fmt(forwardFlops / 1e9)),
                ("peak_gflops", fmt(peak)), ("peak_rss_mb", fmt(peakRSS)),
            ] + machine.jsonFields.map { ($0.0, $0.1 as Any) }
            print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } else {
            print("\(preset.rawValue): \(unet.parameterCount) parameters, batch \(batchSize), \(kernelThreads) threads; "
                  + String(format: "%.3f GFLOP per image forward, %.3f per training step", forwardFlops / 1e9, trainFlops / 1e9))
            print(String(format: "training (fwd+bwd+AdamW): %7.2f images/s  %6.1f GFLOP/s  %3.0f%% of peak  peak RSS %.0f MB",
                         trainRate, trainGflops, 100 * trainGflops / peak, peakRSS))
            print(String(format: "forward (no gradients):  %7.2f images/s  %6.1f GFLOP/s  %3.0f%% of peak",
                         forwardRate, forwardGflops, 100 * forwardGflops / peak))
        }
        if profile && !json {
            // "the rest" is the profiled steps' own wall time less their ops: the timed runs above
            // may run at another clock, and subtracting from them can even give a negative rest
            let p = Profiler()
            let profiledTrain = Profiler.$current.withValue(p) { time(runs: 1) { for _ in 0..<steps { trainStep() } } }
            printProfile(p, title: "training steps", wall: profiledTrain)
            let f = Profiler()
            let profiledForward = Profiler.$current.withValue(f) { time(runs: 1) { for _ in 0..<steps { forward() } } }
            printProfile(f, title: "gradient-free forward passes", wall: profiledForward)
        }
    }

    func printProfile(_ p: Profiler, title: String, wall: Double) {
        print("\nper-op profile of \(steps) \(title) (ms per step; GFLOP/s where the op multiplies)")
        print("op".padding(toLength: 18, withPad: " ", startingAt: 0) + "  fwd ms  bwd ms  calls  fwd GFLOP/s  bwd GFLOP/s")
        let ops = Set(p.forward.keys).union(p.backward.keys).sorted {
            (p.forward[$0]?.seconds ?? 0) + (p.backward[$0]?.seconds ?? 0) > (p.forward[$1]?.seconds ?? 0) + (p.backward[$1]?.seconds ?? 0)
        }
        var total = 0.0
        for op in ops {
            let f = p.forward[op] ?? .init(), b = p.backward[op] ?? .init()
            total += f.seconds + b.seconds
            func rate(_ e: Profiler.Entry) -> String { e.flops > 0 ? String(format: "%11.1f", e.flops / e.seconds / 1e9) : String(repeating: " ", count: 11) }
            print(op.padding(toLength: 18, withPad: " ", startingAt: 0)
                  + String(format: " %7.2f %7.2f %6d  ", 1000 * f.seconds / Double(steps), 1000 * b.seconds / Double(steps), (f.calls + b.calls) / steps)
                  + rate(f) + "  " + rate(b))
        }
        print(String(format: "ops total %.1f ms per step; the rest (graph, optimiser, loss) %.1f ms",
                     1000 * total / Double(steps), 1000 * (wall - total) / Double(steps)))
    }

    func fmt(_ v: Double) -> String { String(format: "%.3f", v) }

    func peakResidentMegabytes() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    /// Mean seconds per run over `runs` runs.
    func time(runs: Int, _ body: () -> Void) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<runs { body() }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(runs)
    }

    func runOps(peak: Double) {
        func report(_ name: String, seconds: Double, flops: Double, reference: Double?) {
            printRow(name, seconds: seconds, flops: flops, reference: reference, peak: peak)
        }
        print("kernel benchmarks, \(kernelThreads) threads, peak \(Int(peak)) GFLOP/s; each the best of several runs; * marks the convolution algorithm in use")
        print("shape".padding(toLength: 50, withPad: " ", startingAt: 0) + "   ms   GFLOP/s  peak   vs sgemm")
        func wanted(_ family: KernelFamily) -> Bool { only == nil || only == family }
        for n in [512, 2048] where wanted(.sgemm) {
            let a = Tensor(shape: [n, n], repeating: 0.5), c = Tensor(zeros: [n, n])
            let t = bestTime { parallelGemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: a.pointer, ldb: n, c: c.pointer, ldc: n) }
            report("sgemm \(n)^3", seconds: t, flops: 2 * Double(n * n * n), reference: nil)
        }
        var policy = (forward: 0.0, backward: 0.0), fastest = (forward: 0.0, both: 0.0)
        let shapes = wanted(.conv) ? convolutionShapes() : []
        for (g, calls) in shapes {
            let channels = g.channels, size = g.height
            // the convolution's own product alone, as the yardstick
            let m = g.outChannels, k = g.patch, w = g.batch * g.outPixels
            let wa = Tensor(shape: [m, k], repeating: 0.01), cols = Tensor(shape: [k, w], repeating: 0.5)
            let prod = Tensor(zeros: [m, w])
            let tg = bestTime { parallelGemm(m: m, n: w, k: k, a: wa.pointer, lda: k, b: cols.pointer, ldb: w, c: prod.pointer, ldc: w) }
            let name = "conv3x3 \(channels)->\(g.outChannels) \(size)x\(size) b\(batchSize)" + (calls > 1 ? " (x\(calls))" : "")
            report("sgemm M=\(m) N=\(w) K=\(k)", seconds: tg, flops: g.flops, reference: nil)
            var rng = RandomGenerator(seed: 1)
            let x = Tensor.randomNormal([g.batch, channels, size, size], using: &rng)
            let weight = Tensor.randomNormal([g.outChannels, channels, 3, 3], using: &rng, scale: 0.05)
            let bias = Tensor(zeros: [g.outChannels]), y = Tensor(zeros: [g.batch, g.outChannels, size, size])
            let dx = Tensor(zeros: x.shape), dw = Tensor(zeros: weight.shape), db = Tensor(zeros: [g.outChannels])
            var best = (forward: Double.infinity, both: Double.infinity)
            for algorithm in ConvAlgorithm.allCases where algorithm == .columns || isDirectConv(g) {
                let tf = bestTime {
                    conv2dForward(g, x: x.pointer, weight: weight.pointer, bias: bias.pointer, y: y.pointer, algorithm: algorithm)
                }
                let tb = bestTime {
                    conv2dBackward(g, x: x.pointer, weight: weight.pointer, dy: y.pointer, dx: dx.pointer,
                                   dweight: dw.pointer, dbias: db.pointer, algorithm: algorithm)
                }
                let mark = ConvAlgorithm.best(for: g) == algorithm ? "*" : ""
                report("\(name) fwd \(algorithm)\(mark)", seconds: tf, flops: g.flops, reference: tg)
                report("\(name) bwd \(algorithm)\(mark)", seconds: tb, flops: 2 * g.flops, reference: 2 * tg)
                if !mark.isEmpty { policy.forward += Double(calls) * tf; policy.backward += Double(calls) * tb }
                best = (min(best.forward, tf), min(best.both, tf + tb))
            }
            fastest.forward += Double(calls) * best.forward; fastest.both += Double(calls) * best.both
        }
        if preset != nil && !shapes.isEmpty {
            print(String(format: "these convolutions, each as often as one pass runs it: %.1f ms forward and %.1f ms backward "
                         + "with the algorithms marked *; with the fastest per shape %.1f ms forward (%.0f%% of the marked) "
                         + "and %.1f ms both ways (%.0f%%)", 1000 * policy.forward, 1000 * policy.backward,
                         1000 * fastest.forward, 100 * fastest.forward / policy.forward,
                         1000 * fastest.both, 100 * fastest.both / (policy.forward + policy.backward)))
        }
        if wanted(.attention) { benchAttention(peak: peak) }
    }

    /// The 3x3 convolutions to time, with how many times a forward pass runs each: with --preset,
    /// that U-Net's own (from one recorded pass); otherwise square ones at the presets' sizes.
    func convolutionShapes() -> [(ConvGeometry, calls: Int)] {
        guard let preset else {
            return [(32, 28), (64, 14), (128, 7), (64, 28), (128, 14), (256, 8), (256, 16), (128, 32), (256, 32)].map { c, size in
                (ConvGeometry(batch: batchSize, channels: c, height: size, width: size, outChannels: c, kernel: 3, stride: 1, padding: 1), 1)
            }
        }
        var rng = RandomGenerator(seed: 0)
        let config = preset.config
        let unet = UNet2DModel(config: config, using: &rng)
        let x = Tensor.randomNormal([batchSize, config.inChannels, config.sampleSize, config.sampleSize], using: &rng)
        let recorder = Profiler()
        Profiler.$current.withValue(recorder) {
            _ = withoutGradients { unet(x, timesteps: [Float](repeating: 500, count: batchSize)) }
        }
        return recorder.convolutions.filter { isDirectConv($0.key) }
            .sorted { ($0.key.height, $0.key.channels, $0.key.outChannels) > ($1.key.height, $1.key.channels, $1.key.outChannels) }
            .map { ($0.key, $0.value) }
    }

    /// Attention at the presets' shapes: fmnist's 14x14 (8 heads of 8) and 7x7 (16 of 8), cifar10's 16x16 (1 of 256);
    /// forward keeping what the backward pass needs (training) and not (sampling).
    func benchAttention(peak: Double) {
        func report(_ name: String, seconds: Double, flops: Double, reference: Double?) {
            printRow(name, seconds: seconds, flops: flops, reference: reference, peak: peak)
        }
        for (b, l, h, d) in [(batchSize, 196, 8, 8), (batchSize, 49, 16, 8), (16, 256, 1, 256)] {
            let g = AttentionGeometry(batch: b, length: l, heads: h, headDim: d)
            var rng = RandomGenerator(seed: 2)
            let q = Tensor.randomNormal([b, l, h * d], using: &rng), k = Tensor.randomNormal(q.shape, using: &rng)
            let v = Tensor.randomNormal(q.shape, using: &rng), o = Tensor(zeros: q.shape)
            let saved = Tensor(zeros: [g.savedCount]), dq = Tensor(zeros: q.shape), dk = Tensor(zeros: q.shape), dv = Tensor(zeros: q.shape)
            let name = "attention b\(b) L=\(l) \(h)x\(d)"
            let tf = bestTime { attentionForward(g, q: q.pointer, k: k.pointer, v: v.pointer, out: o.pointer, saved: saved.pointer) }
            report(name + " fwd", seconds: tf, flops: g.flops, reference: nil)
            let ti = bestTime { attentionForward(g, q: q.pointer, k: k.pointer, v: v.pointer, out: o.pointer, saved: nil) }
            report(name + " fwd, sampling", seconds: ti, flops: g.flops, reference: nil)
            let tb = bestTime {
                attentionBackward(g, q: q.pointer, k: k.pointer, v: v.pointer, saved: saved.pointer, dout: o.pointer,
                                  dq: dq.pointer, dk: dk.pointer, dv: dv.pointer)
            }
            report(name + " bwd", seconds: tb, flops: 2 * g.flops, reference: nil)
        }
    }

    /// The best of several timed runs after one warm-up, in seconds.
    func bestTime(_ body: () -> Void) -> Double {
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

    func printRow(_ name: String, seconds: Double, flops: Double, reference: Double?, peak: Double) {
        let gflops = flops / seconds / 1e9
        let ratio = reference.map { String(format: "%7.2fx", $0 / seconds) } ?? ""
        print(name.padding(toLength: 50, withPad: " ", startingAt: 0)
              + String(format: " %6.2f  %7.1f  %3.0f%%  ", seconds * 1000, gflops, 100 * gflops / peak) + ratio)
    }
}
