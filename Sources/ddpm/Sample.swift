import ArgumentParser
import Datasets
import Diffusion
import Distributed
import Foundation
import Tensors

extension Pipeline.SamplerKind: ExpressibleByArgument {}
extension SchedulerConfig.TimestepSpacing: ExpressibleByArgument {}

/// Generates images from a model folder.
struct Sample: ParsableCommand {
    /// The most images a PNG grid shows; more go to a .npy.
    static let gridLimit = 4096

    static let configuration = CommandConfiguration(
        abstract: "Generate images with a diffusion model (a diffusers DDPMPipeline folder).",
        discussion: """
            Scheduler settings come from the folder's scheduler_config.json; flags override them. \
            A .png output is a grid of the images; a .npy output holds the final samples [N, C, H, W] \
            exactly as the last scheduler step returns them. Without --model, the bundled model is used.

            A class-conditional model draws the class --class names: a name from the folder's id2label \
            (case does not matter), an index, `all` (image i gets class i mod K: every class in turn, the \
            default) or `none` (the null label: the unconditional model). --guidance-scale W follows the \
            label more strongly by classifier-free guidance, in diffusers' convention: \
            eps = eps_uncond + W (eps_cond - eps_uncond); W = 1 is plain conditional sampling.
            """)

    @Option(help: "Model folder (diffusers pipeline or unet folder). Default: the bundled model.") var model: String?
    @Option(help: "Number of images (ignored with --noise).") var count = 16
    @Option(help: "Sampler: ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M), euler, euler-a (ancestral) or heun. Default: the folder's scheduler class.")
    var sampler: Pipeline.SamplerKind?
    @Option(help: "Inference steps. Default: all training timesteps for ddpm, 50 for ddim, 25 for the others.") var steps: Int?
    @Flag(inversion: .prefixedNo, help: "Karras et al.'s sigmas (dpm++, euler, heun). Default: the folder's use_karras_sigmas.")
    var karras: Bool?
    @Flag(inversion: .prefixedNo, help: "Clip x_0 to [-1, 1] (ddpm, ddim, heun). Default: the folder's clip_sample; off to decode ddpm invert's noise.")
    var clipSample: Bool?
    @Option(help: "DDIM's eta: 0 deterministic, 1 DDPM-like noise.") var eta: Float = 0
    @Option(help: "Timestep spacing: leading, trailing or linspace. Default: the folder's.") var timestepSpacing: SchedulerConfig.TimestepSpacing?
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Starting noise as a float32 .npy [N, C, H, W]; N sets the count.") var noise: String?
    @Option(help: "Output file: .png (a grid) or .npy (raw samples).") var output = "samples.png"
    @Option(help: "Also write a strip of x_t at evenly spaced steps, noise to image, to this PNG.") var progression: String?
    @Option(help: "Images denoised at once.") var batchSize = 64
    @Option(name: .customLong("class"), help: "Class-conditional models: a class name, an index, all or none (default all).")
    var classLabel: String?
    @Option(help: "Enlarge each image of a PNG K times (nearest neighbour). Default: to at least 64 pixels wide; 1: as drawn.")
    var scale: Int?
    @Option(help: "Classifier-free guidance scale W (1: none; class-conditional models).") var guidanceScale: Float = 1

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        if let scale, !(1...64).contains(scale) { throw ValidationError("--scale must lie in 1...64") }
        guard eta >= 0 else { throw ValidationError("--eta must be 0 or more") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        guard output.hasSuffix(".png") || output.hasSuffix(".npy") else { throw ValidationError("--output must end in .png or .npy") }
        if let progression, !progression.hasSuffix(".png") { throw ValidationError("--progression must end in .png") }
        if eta > 0 && sampler != nil && sampler != .ddim { throw ValidationError("--eta applies to the ddim sampler only") }
        if karras != nil && [.ddpm, .ddim, .eulerAncestral].contains(sampler) {
            throw ValidationError("--karras applies to the dpm++, euler and heun samplers")
        }
        guard guidanceScale.isFinite && guidanceScale >= 0 else { throw ValidationError("--guidance-scale must be 0 or more") }
    }

    func run() throws {
        // under mpirun: rank r draws batches b with b mod K = r; rank 0 gathers them in order and writes
        try onEveryRank(sample)
    }

    func sample(_ world: Communicator) throws {
        let folder = try model.map { URL(fileURLWithPath: $0) } ?? BundledModel.folder()
        let pipeline = try Pipeline.load(folder)
        let kind = sampler ?? pipeline.defaultSampler
        let scheduler = try pipeline.scheduler(kind, steps: steps, eta: eta, spacing: timestepSpacing, karras: karras, clipSample: clipSample)
        let stepCount = steps ?? kind.defaultSteps(pipeline.schedulerConfig.numTrainTimesteps)
        if world.isRoot { Self.warnIfClipping(kind, clipSample ?? pipeline.schedulerConfig.clipSample, guidanceScale: guidanceScale) }

        var rng = RandomGenerator(seed: seed)
        let given = try noise.map { try pipeline.noise(from: URL(fileURLWithPath: $0)) }
        if world.isDistributed && given != nil {
            throw ValidationError("--noise is not split over MPI ranks: run it without mpirun")
        }
        let n = given?.shape[0] ?? count
        let url = URL(fileURLWithPath: output)
        // a .npy is written a batch at a time, so any count fits in memory; a grid needs every image
        let writer = output.hasSuffix(".npy") && world.isRoot ? try NPY.Writer(url, shape: pipeline.sampleShape(count: n)) : nil
        if !output.hasSuffix(".npy") && n > Self.gridLimit {
            throw ValidationError("--count \(n): a PNG grid of more than \(Self.gridLimit) images is not readable; write a .npy (streamed to disk)")
        }
        let labels = try classLabels(for: pipeline, count: n)
        let calls = scheduler.timesteps.count
        let frameSteps = Set((1...min(10, calls)).map { calls * $0 / min(10, calls) - 1 })
        let shown = min(n, 8)
        // the strip's first frame: the first images' noise, drawn again (the stream draws it batch by batch)
        var first = NormalStream(RandomGenerator(seed: seed))
        var strip: [Tensor] = progression == nil ? [] : [given?.slice(0..<shown)
            ?? Tensor(shape: pipeline.sampleShape(count: shown), first.next(shown * pipeline.sampleShape(count: 1).reduce(1, *)))]
        let bar = ProgressBar(total: calls * ((n + batchSize - 1) / batchSize), label: "\(kind.rawValue) \(stepCount) steps")
        let began = Date()
        var kept: [Tensor] = []
        func observe(_ batch: Range<Int>, _ step: Denoising.Step) {
            guard batch.lowerBound == 0, progression != nil else { return }
            if frameSteps.contains(step.index) { strip.append(step.sample.slice(0..<min(batch.count, shown))) }
        }
        func progress(_ done: Int, _ total: Int) {
            bar.update(done, detail: String(format: "%.2f img/s", Double(n) * Double(done) / Double(total) / Date().timeIntervalSince(began)))
        }
        func write(_ images: Tensor) throws {
            if let writer { try writer.append(images) } else { kept.append(images) }
        }
        if let given {
            try write(pipeline.generate(from: given, with: scheduler, classLabels: labels, guidanceScale: guidanceScale,
                                        batchSize: batchSize, using: &rng, observe: observe, progress: progress))
        } else {
            // rank 0 writes the batches in order, receiving the other ranks' as it reaches them
            let gatherer = BatchGatherer(world, count: n, batchSize: batchSize, shape: pipeline.sampleShape, write: write)
            try pipeline.generate(count: n, with: scheduler, classLabels: labels, guidanceScale: guidanceScale, batchSize: batchSize,
                                  share: (world.rank, world.size), using: &rng, observe: observe, progress: progress,
                                  deliver: gatherer.deliver)
            try gatherer.finish()
        }
        guard world.isRoot else { return }
        let seconds = Date().timeIntervalSince(began)

        if let writer { try writer.finish() } else { try grid(Tensor.joined(kept), labels: labels).writePNG(to: url) }
        if let progression { try progressionStrip(strip).writePNG(to: URL(fileURLWithPath: progression)) }
        print(String(format: "wrote %@: %d images, %@ %d steps in %.1f s (%.2f images/s)",
                     output, n, kind.rawValue, stepCount, seconds, Double(n) / seconds))
    }

    /// The label of each image: --class resolved against the model's classes (every class in turn
    /// when not given); nil for an unconditional model, which refuses --class and guidance.
    func classLabels(for pipeline: Pipeline, count n: Int) throws -> [Int]? {
        try Self.classLabels(for: pipeline, count: n, classLabel: classLabel, guidanceScale: guidanceScale)
    }

    /// DDIM clips x_0 but takes its next step with the guided eps unclipped (as diffusers does): the
    /// stronger the guidance, the further the two disagree, and samples become saturated blobs.
    static func warnIfClipping(_ kind: Pipeline.SamplerKind, _ clip: Bool, guidanceScale: Float) {
        guard kind == .ddim, clip, guidanceScale > 1 else { return }
        FileHandle.standardError.write(Data("warning: guidance with DDIM's x_0 clipping saturates samples; pass --no-clip-sample\n".utf8))
    }

    static func classLabels(for pipeline: Pipeline, count n: Int, classLabel: String?, guidanceScale: Float) throws -> [Int]? {
        guard let null = pipeline.unet.config.nullClassLabel, let k = pipeline.classCount else {
            if pipeline.unet.config.isClassConditional {
                throw CommandError("the model's class embedding has no num_class_embeds: cannot tell its classes or null label")
            }
            if classLabel != nil || guidanceScale != 1 {
                throw ValidationError("--class and --guidance-scale need a class-conditional model (num_class_embeds); this one is unconditional")
            }
            return nil
        }
        let names = pipeline.classNames ?? (0..<k).map(String.init)
        switch classLabel?.lowercased() {
        case nil, "all": return (0..<n).map { $0 % k }
        case "none": return Array(repeating: null, count: n)
        case let wanted?:
            if let i = names.firstIndex(where: { $0.lowercased() == wanted }) ?? Int(wanted), i >= 0, i < k {
                return Array(repeating: i, count: n)
            }
            throw ValidationError("--class \(classLabel!): not a class of this model; its classes are "
                                  + names.enumerated().map { "\($0.offset) \($0.element)" }.joined(separator: ", ") + ", or all, none")
        }
    }

    /// The PNG grid: when every class is drawn in turn (image i of class i mod K) and each as often,
    /// one row per class; otherwise as many columns as rows.
    func grid(_ images: Tensor, labels: [Int]?) -> Image {
        let n = images.shape[0], k = Set(labels ?? []).count
        guard let labels, k > 1, n % k == 0, labels.enumerated().allSatisfy({ $0.element == $0.offset % k }) else {
            return imageGrid(images, scale: scale)
        }
        let columns = n / k
        // grid position i, in row i / columns (the class) and column i % columns, shows image (i % columns) k + i / columns
        let byClass = (0..<n).map { i in (i % columns) * k + i / columns }.map { images.slice($0..<($0 + 1)) }
        return imageGrid(Tensor.joined(byClass), columns: columns, scale: scale)
    }

    /// One row per image, one column per frame.
    func progressionStrip(_ frames: [Tensor]) -> Image {
        let rows = frames.map { $0.shape[0] }.min()!
        let tiles = (0..<rows).flatMap { r in frames.map { $0.slice(r..<(r + 1)) } }
        return imageGrid(Tensor.joined(tiles), columns: frames.count, scale: scale)
    }
}

/// Where the model and the classifier bundled with the project live.
enum BundledModel {
    static let relativePath = "models/fashion-mnist"
    static let classifierPath = "models/fashion-mnist-classifier"

    /// $DDPM_MODEL, else models/fashion-mnist beside the checkout the binary was built in, else
    /// under the current directory.
    static func folder() throws -> URL {
        try find(relativePath, marker: "model_index.json", environment: "DDPM_MODEL", what: "bundled model", flag: "--model DIR")
    }

    /// $DDPM_CLASSIFIER, else models/fashion-mnist-classifier, looked for as the model is.
    static func classifierFolder() throws -> URL {
        try find(classifierPath, marker: "config.json", environment: "DDPM_CLASSIFIER", what: "bundled classifier", flag: "--classifier DIR")
    }

    static func find(_ relative: String, marker: String, environment: String, what: String, flag: String) throws -> URL {
        if let env = ProcessInfo.processInfo.environment[environment] { return URL(fileURLWithPath: env) }
        var candidates: [URL] = []
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(dir.appendingPathComponent(relative))
            dir = dir.deletingLastPathComponent()
        }
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(relative))
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0.appendingPathComponent(marker).path) }) {
            return found
        }
        throw CommandError("no \(what) found (looked for \(relative) beside the binary and in the current directory); pass \(flag)")
    }
}

/// A failure of the command itself (exit status 1), as opposed to a misuse of its flags.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
