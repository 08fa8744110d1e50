import ArgumentParser
import Datasets
import Diffusion
import Distributed
import Dispatch
import Foundation
import Layers
import Tensors

extension SchedulerConfig.PredictionType: ExpressibleByArgument {}
extension SchedulerConfig.BetaSchedule: ExpressibleByArgument {}

/// Trains a model on images and writes a diffusers pipeline folder with checkpoints to resume from.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a diffusion model on images (DDPM, Ho et al. 2020, Algorithm 1).",
        discussion: """
            --data is fashion-mnist (Debian's dataset-fashion-mnist), an IDX folder or file, a folder of \
            CIFAR-10 binary batches, a folder of PNG/JPEG images, or a .npy [N, C, H, W]. The output folder \
            is a diffusers DDPMPipeline (EMA weights in unet/) plus training/ (raw weights, optimiser, \
            state, log.csv), samples/ and loss.png. --resume continues a run bit for bit to --steps in \
            total. Ctrl-C finishes the current step, saves and exits.

            --class-conditional trains on the images' labels (IDX label files, CIFAR-10's label byte, \
            class sub-folders, or --labels FILE.npy) with a class embedding of classes + 1 rows, the last \
            the null label that --label-dropout puts in place of a label, so that one network learns both \
            p(x | y) and p(x) for classifier-free guidance. --init-from starts from another model's \
            weights; a class embedding that model lacks starts at zero.
            """)

    @Option(help: "Training images (see above).") var data: String
    @Option(help: "Model size: tiny, fmnist or cifar10.") var preset: UNetConfig.Preset?
    @Option(help: "A unet config.json instead of a preset.") var config: String?
    @Option(help: "Total optimiser steps (default 10000; on --resume, the saved total).") var steps: Int?
    @Option(help: "Images per step.") var batchSize = 64
    @Option(help: "AdamW learning rate.") var learningRate: Float = 2e-4
    @Option(help: "Linear learning-rate warmup steps.") var warmup = 500
    @Option(help: "Largest EMA decay (it warms up from 0).") var emaDecay: Float = 0.9999
    @Option(help: "What the network predicts: epsilon, sample or v_prediction.") var predictionType = SchedulerConfig.PredictionType.epsilon
    @Option(help: "Noise schedule: linear, scaled_linear or squaredcos_cap_v2.") var betaSchedule = SchedulerConfig.BetaSchedule.linear
    @Option(help: "Random seed (weights, data order, noise).") var seed: UInt64 = 0
    @Option(help: "Output folder.") var output = "runs/model"
    @Flag(help: "Continue the run saved in --output.") var resume = false
    @Option(help: "Save a checkpoint every N steps.") var checkpointEvery = 1000
    @Option(help: "Write a sample grid every N steps (0: never).") var sampleEvery = 1000
    @Flag(help: "Random horizontal flips.") var flip = false
    @Option(help: "min-SNR-gamma loss weighting (e.g. 5).") var minSNRGamma: Float?
    @Flag(help: "Condition the model on the images' class labels.") var classConditional = false
    @Option(help: "Probability of replacing a label by the null label (with --class-conditional).") var labelDropout: Float = 0.1
    @Option(help: "Class labels as a .npy of integers [N], one per image of --data.") var labels: String?
    @Option(help: ArgumentHelp("A learning-rate factor for the parameters under a name prefix (repeatable).",
                               discussion: "class_embedding=10 lets a class table added by --init-from catch up with the weights it joins.",
                               valueName: "PREFIX=K"))
    var lrScale: [String] = []
    @Option(help: "Start from this model folder's weights (and its unet and scheduler configs).") var initFrom: String?
    @Flag(help: "Learn the variance too (Nichol & Dhariwal): twice the output channels, learned_range, the hybrid loss.")
    var learnVariance = false
    @Option(help: ArgumentHelp("Cut each batch into N micro-batches whose gradients add up before one update (default 1).",
                               discussion: "The same steps in less memory; on --resume it may change."))
    var gradientAccumulationSteps: Int?

    func validate() throws {
        if preset != nil && config != nil { throw ValidationError("give --preset or --config, not both") }
        guard (steps ?? 1) >= 1, batchSize >= 1, checkpointEvery >= 1, sampleEvery >= 0, warmup >= 0 else {
            throw ValidationError("--steps, --batch-size and --checkpoint-every must be at least 1; --sample-every and --warmup at least 0")
        }
        guard learningRate > 0, emaDecay >= 0, emaDecay < 1 else { throw ValidationError("--learning-rate must be positive and --ema-decay in [0, 1)") }
        guard labelDropout >= 0, labelDropout < 1 else { throw ValidationError("--label-dropout must lie in [0, 1)") }
        if let n = gradientAccumulationSteps, n < 1 || n > batchSize {
            throw ValidationError("--gradient-accumulation-steps must lie in 1...--batch-size (\(batchSize)), is \(n)")
        }
        if initFrom != nil && (preset != nil || config != nil) {
            throw ValidationError("--init-from takes the model's own config: give it without --preset or --config")
        }
        if resume && (initFrom != nil || classConditional || learnVariance) {
            throw ValidationError("--resume continues the saved run as it was: --init-from, --class-conditional and --learn-variance apply to new runs")
        }
        if learnVariance && initFrom != nil { throw ValidationError("--learn-variance starts a new model: give it without --init-from") }
        if resume && !lrScale.isEmpty { throw ValidationError("--resume continues the saved run as it was: --lr-scale applies to new runs") }
        _ = try learningRateScales()
    }

    /// `--lr-scale PREFIX=K` as a dictionary.
    func learningRateScales() throws -> [String: Float]? {
        guard !lrScale.isEmpty else { return nil }
        var scales: [String: Float] = [:]
        for item in lrScale {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, let k = Float(parts[1]), k.isFinite, k >= 0 else {
                throw ValidationError("--lr-scale takes PREFIX=K with K a number >= 0, e.g. class_embedding=10; got '\(item)'")
            }
            scales[parts[0]] = k
        }
        return scales
    }

    func run() throws {
        // under mpirun: rank r of K trains on shard r of every batch; rank 0 alone writes
        try onEveryRank(train)
    }

    func train(_ world: Communicator) throws {
        let folder = URL(fileURLWithPath: output)
        signal(SIGXFSZ, SIG_IGN)  // a file-size limit fails the write (and the save says so) instead of killing the run
        let lock = world.isRoot ? try FolderLock(folder) : nil
        defer { withExtendedLifetime(lock) {} }
        let trainer: Trainer
        let dataset: ImageDataset
        if resume {
            trainer = try Trainer.resume(from: folder, steps: steps)
            if let n = gradientAccumulationSteps {
                guard n <= trainer.options.batchSize else {
                    throw ValidationError("--gradient-accumulation-steps \(n) is more than the run's batch size \(trainer.options.batchSize)")
                }
                trainer.options.gradientAccumulationSteps = n
            }
            let c = trainer.unet.config
            dataset = try ImageDataset.load(data, channels: c.inChannels, size: c.sampleSize, labels: labels)
            let saved = try Trainer.savedDataSource(in: folder)
            let source = data == "fashion-mnist" ? ImageDataset.fashionMNISTFolder : data
            if !saved.hasPrefix(source) && !source.hasPrefix(saved) {
                FileHandle.standardError.write(Data("warning: resuming on \(source), the run began on \(saved)\n".utf8))
            }
        } else {
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("training/state.json").path) {
                throw CommandError("\(output) already holds a training run: pass --resume to continue it, or another --output")
            }
            let source = try initFrom.map { try Pipeline.load(URL(fileURLWithPath: $0)) }
            var unetConfig = source?.unet.config ?? (preset ?? .fmnist).config
            if let config { unetConfig = try UNetConfig.load(URL(fileURLWithPath: config)) }
            dataset = try ImageDataset.load(data, channels: unetConfig.inChannels, size: unetConfig.sampleSize, labels: labels)
            var classNames = source?.classNames
            if classConditional || unetConfig.isClassConditional {
                guard let labels = dataset.labels else {
                    throw CommandError("\(dataset.source): no class labels (expected an IDX label file beside the images, CIFAR-10 batches, "
                                       + "class sub-folders, or --labels FILE.npy)")
                }
                if unetConfig.classEmbedding == nil { unetConfig.classEmbedding = .table }
                if unetConfig.numClassEmbeds == nil { unetConfig.numClassEmbeds = labels.classCount + 1 }
                guard unetConfig.numClassEmbeds == labels.classCount + 1 else {
                    throw CommandError("the model has \(unetConfig.numClassEmbeds!) class rows; \(dataset.source) has \(labels.classCount) classes "
                                       + "(+ 1 null label = \(labels.classCount + 1))")
                }
                classNames = labels.names
            }
            var schedulerConfig = source?.schedulerConfig ?? SchedulerConfig()
            if source == nil {
                schedulerConfig.predictionType = predictionType
                schedulerConfig.betaSchedule = betaSchedule
                if preset == .cifar10 { schedulerConfig.varianceType = .fixedLarge }
            }
            // a model meant to be guided: DDIM clips x_0 but keeps the guided eps (as diffusers does), and
            // that mismatch turns guided samples into saturated blobs (README, "Guidance and clipping")
            if unetConfig.isClassConditional { schedulerConfig.clipSample = false }
            if learnVariance {
                guard predictionType == .epsilon else { throw ValidationError("--learn-variance trains epsilon prediction") }
                unetConfig.outChannels = 2 * unetConfig.inChannels
                schedulerConfig.varianceType = .learnedRange
            }
            var rng = RandomGenerator(seed: seed)
            var options = TrainingOptions()
            options.steps = steps ?? 10_000; options.batchSize = batchSize; options.learningRate = learningRate
            options.warmup = warmup; options.emaDecay = emaDecay; options.seed = seed
            options.flip = flip; options.minSNRGamma = minSNRGamma
            options.labelDropout = unetConfig.isClassConditional ? labelDropout : nil
            options.learningRateScales = try learningRateScales()
            options.gradientAccumulationSteps = gradientAccumulationSteps
            let unet = UNet2DModel(config: unetConfig, using: &rng)
            let names = unet.parameters.map(\.name)
            for prefix in options.learningRateScales?.keys.sorted() ?? [] where !names.contains(where: { $0 == prefix || $0.hasPrefix(prefix + ".") }) {
                let tops = Set(names.map { String($0.prefix { $0 != "." }) }).sorted().joined(separator: ", ")
                throw CommandError("--lr-scale \(prefix): no parameter of this model has that name prefix (top-level names: \(tops))")
            }
            if let source, let initFrom { try warmStart(unet, from: source, folder: URL(fileURLWithPath: initFrom)) }
            trainer = Trainer(pipeline: Pipeline(unet: unet, schedulerConfig: schedulerConfig, classNames: classNames), options: options)
        }
        let options = trainer.options
        if trainer.pipeline.schedulerConfig.varianceType == .learned {
            throw CommandError("variance_type 'learned' samples but does not train here: the hybrid loss trains 'learned_range'")
        }
        if trainer.unet.config.isClassConditional && dataset.labels == nil {
            throw CommandError("\(dataset.source): no class labels for this class-conditional run (pass --labels FILE.npy as the run began)")
        }
        guard dataset.count >= options.batchSize else {
            throw CommandError("\(dataset.source): \(dataset.count) images, fewer than one batch of \(options.batchSize)")
        }
        guard options.batchSize % world.size == 0 else {
            throw CommandError("batch \(options.batchSize) does not split into \(world.size) equal shards: choose a multiple of \(world.size)")
        }
        trainer.parallel = DataParallel(rank: world.rank, ranks: world.size, sum: world.sum)
        let sampler = BatchSampler(dataset: dataset, batchSize: options.batchSize, seed: options.seed, flip: options.flip)
        let batches = BatchPrefetcher(sampler, startingAt: trainer.step)
        let stop = StopFlag()
        stop.installForSIGINT()

        if world.isRoot {
            FileHandle.standardError.write(Data(("training \(trainer.unet.parameterCount) parameters on \(dataset.count) images "
                + "(\(dataset.source)), batch \(options.batchSize)"
                + (world.isDistributed ? " over \(world.size) processes (\(options.batchSize / world.size) images each, \(kernelThreads) threads each)" : "")
                + ", steps \(trainer.step) -> \(options.steps)\n").utf8))
        }
        let start = Date(), startStep = trainer.step
        var lastReport = Date.distantPast
        while trainer.step < options.steps {
            let loss = trainer.train(on: batches.nextBatch())
            guard loss.isFinite else {
                throw CommandError("the loss became \(loss) at step \(trainer.step + 1); stopped without saving, the last checkpoint in \(output) is kept. "
                                   + "Try a lower --learning-rate.")
            }
            if world.isDistributed {
                // every process must hold the same weights after every step, and stop at the same one
                let checksum = trainer.unet.parameterTensors.reduce(0.0) { $0 + sumOfElements($1.pointer, count: $1.count) }
                if world.maximum(checksum) != -world.maximum(-checksum) {
                    world.abort("the processes' weights differ after step \(trainer.step) (checksum \(checksum))")
                }
                if world.maximum(stop.isSet ? 1 : 0) > 0 { stop.raise() }
                guard world.isRoot else {
                    if stop.isSet { return }
                    continue
                }
            }
            let done = trainer.step - startStep, elapsed = Date().timeIntervalSince(start)
            if Date().timeIntervalSince(lastReport) > 2 || trainer.step == options.steps {
                lastReport = Date()
                let rate = Double(done * options.batchSize) / elapsed
                let eta = elapsed / Double(done) * Double(options.steps - trainer.step)
                let line = String(format: "step %d/%d  loss %.4f  lr %.2e  %.1f images/s  ETA %@",
                                  trainer.step, options.steps, loss, trainer.optimizer.learningRate, rate, duration(eta))
                FileHandle.standardError.write(Data((isatty(STDERR_FILENO) != 0 ? "\r" + line + "   " : line + "\n").utf8))
            }
            let finished = trainer.step == options.steps || stop.isSet
            if trainer.step % checkpointEvery == 0 || finished {
                try trainer.save(to: folder, dataSource: dataset.source)
                try lineChart(trainer.log.map(\.loss)).writePNG(to: folder.appendingPathComponent("loss.png"))
            }
            if sampleEvery > 0 && (trainer.step % sampleEvery == 0 || trainer.step == options.steps) {
                try writeSamples(trainer, to: folder.appendingPathComponent(String(format: "samples/step-%06d.png", trainer.step)))
            }
            if stop.isSet {
                FileHandle.standardError.write(Data("\ninterrupted: saved step \(trainer.step) in \(output); --resume continues\n".utf8))
                return
            }
        }
        guard world.isRoot else { return }
        if world.isDistributed {
            let seconds = Date().timeIntervalSince(start), steps = max(1, trainer.step - startStep)
            FileHandle.standardError.write(Data(String(format: "\nall-reduce: %.1f MB per step, %.1f ms a step, %.1f%% of the steps' time\n",
                Double(trainer.reducedFloats) * 4e-6, trainer.reduceSeconds / Double(steps) * 1e3,
                100 * trainer.reduceSeconds / max(seconds, 1e-9)).utf8))
        }
        let recent = trainer.log.suffix(100).map(\.loss)
        print(String(format: "\ntrained to step %d in %@; mean loss of the last %d steps %.4f; model in %@",
                     trainer.step, duration(Date().timeIntervalSince(start)), recent.count,
                     recent.reduce(0, +) / Float(max(recent.count, 1)), output))
    }

    /// Copies a trained model's weights into `unet`; a class embedding the source lacks starts at
    /// zero, so the new model at first ignores its labels and predicts what the source predicted.
    func warmStart(_ unet: UNet2DModel, from source: Pipeline, folder: URL) throws {
        var weights = source.unet.stateDictionary
        if !source.unet.config.isClassConditional {
            unet.zeroClassEmbedding()
            for (name, tensor) in unet.parameters where name.hasPrefix("class_embedding.") { weights[name] = tensor }
        }
        try unet.load(weights, from: folder)
    }

    /// 16 images from the EMA weights, DDIM 50 steps, a fixed seed so grids are comparable across
    /// steps; a class-conditional model draws the classes in turn.
    func writeSamples(_ trainer: Trainer, to url: URL) throws {
        let scheduler = try trainer.pipeline.scheduler(.ddim, steps: 50)
        var rng = RandomGenerator(seed: 1234)
        let noise = Tensor.randomNormal(trainer.pipeline.sampleShape(count: 16), using: &rng)
        let labels = trainer.pipeline.classCount.map { k in (0..<16).map { $0 % k } }
        let images = trainer.withEMAWeights {
            var loop = trainer.pipeline.denoise(noise, with: scheduler, classLabels: labels, using: rng)
            return loop.run()
        }
        try imageGrid(images, columns: 4).writePNG(to: url)
    }

    func duration(_ seconds: Double) -> String {
        let s = Int(seconds.isFinite ? seconds : 0)
        return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : String(format: "%dm%02ds", s / 60, s % 60)
    }
}

/// Set by SIGINT: the training loop finishes its step, saves and exits.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    private var source: DispatchSourceSignal?

    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return set }

    func raise() { lock.lock(); set = true; lock.unlock() }

    func installForSIGINT() {
        signal(SIGINT, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        s.setEventHandler { [self] in
            lock.lock(); set = true; lock.unlock()
            FileHandle.standardError.write(Data("\nstopping after this step...\n".utf8))
        }
        s.resume()
        source = s
    }
}

/// An exclusive lock on a training folder (`.lock`, flock(2)), held while `ddpm train` runs and
/// released by the kernel when the process ends, however it ends: a second run on the same
/// folder refuses instead of both writing checkpoints.
final class FolderLock {
    let descriptor: Int32

    init(_ folder: URL) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent(".lock").path
        descriptor = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw CommandError("\(path): cannot be opened (\(String(cString: strerror(errno))))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(descriptor)
            throw CommandError("\(folder.path) is being trained by another ddpm train (process \(holder)); wait for it to end, or choose another --output")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = pid.withCString { write(descriptor, $0, strlen($0)) }
    }

    deinit { close(descriptor) }
}
