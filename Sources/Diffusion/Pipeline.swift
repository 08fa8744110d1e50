import Foundation
import Layers
import Tensors

/// A diffusion model as a diffusers `DDPMPipeline` folder:
///
///     model_index.json                        {"_class_name": "DDPMPipeline", ...}
///     unet/config.json                        UNetConfig
///     unet/diffusion_pytorch_model.safetensors weights under diffusers' names
///     scheduler/scheduler_config.json         SchedulerConfig
///
/// A class-conditional model's folder names its classes as `id2label` in `model_index.json`
/// (the convention of diffusers' DiT pipeline folders); the U-Net's last class row is the null label.
/// A bare unet folder (config.json + safetensors) also loads, with a default DDPM scheduler.
public final class Pipeline {
    public let unet: UNet2DModel
    public var schedulerConfig: SchedulerConfig
    /// The classes of a class-conditional model, by label (`id2label`); nil for unconditional models.
    public var classNames: [String]?

    public init(unet: UNet2DModel, schedulerConfig: SchedulerConfig, classNames: [String]? = nil) {
        self.unet = unet
        self.schedulerConfig = schedulerConfig
        self.classNames = classNames
    }

    /// The number of real classes (the null label excluded), for a class-conditional model.
    public var classCount: Int? { classNames?.count ?? unet.config.nullClassLabel }

    static let weightsName = "diffusion_pytorch_model.safetensors"

    public static func load(_ folder: URL) throws -> Pipeline {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PipelineError.notAFolder(folder.path)
        }
        let index = folder.appendingPathComponent("model_index.json")
        let unetFolder: URL
        var schedulerConfig = SchedulerConfig()
        var classNames: [String]? = nil
        if fm.fileExists(atPath: index.path) {
            let r = try ConfigReader(file: index)
            classNames = try r.indexedStrings("id2label")
            let className = try r.string("_class_name") ?? "DDPMPipeline"
            guard ["DDPMPipeline", "DDIMPipeline"].contains(className) else {
                throw ConfigError(index, key: "_class_name", "is '\(className)'; DDPMPipeline or DDIMPipeline folders are supported")
            }
            unetFolder = folder.appendingPathComponent("unet")
            guard fm.fileExists(atPath: unetFolder.path) else { throw PipelineError.missing(unetFolder.path, "the unet folder") }
            let schedulerFile = folder.appendingPathComponent("scheduler/scheduler_config.json")
            guard fm.fileExists(atPath: schedulerFile.path) else { throw PipelineError.missing(schedulerFile.path, "the scheduler config") }
            schedulerConfig = try SchedulerConfig.load(schedulerFile)
        } else if fm.fileExists(atPath: folder.appendingPathComponent("config.json").path) {
            unetFolder = folder  // a bare unet folder
        } else if fm.fileExists(atPath: folder.appendingPathComponent("unet").path) {
            throw PipelineError.missing(index.path, "model_index.json")
        } else {
            throw PipelineError.missing(folder.appendingPathComponent("unet").path, "the unet folder (no model_index.json, no config.json)")
        }

        let configFile = unetFolder.appendingPathComponent("config.json")
        guard fm.fileExists(atPath: configFile.path) else { throw PipelineError.missing(configFile.path, "the unet config") }
        let config = try UNetConfig.load(configFile)
        let weights = unetFolder.appendingPathComponent(weightsName)
        guard fm.fileExists(atPath: weights.path) else {
            let pickled = unetFolder.appendingPathComponent("diffusion_pytorch_model.bin")
            if fm.fileExists(atPath: pickled.path) { throw PipelineError.pickled(pickled.path) }
            throw PipelineError.missing(weights.path, "the unet weights")
        }
        var rng = RandomGenerator(seed: 0)
        let unet = UNet2DModel(config: config, using: &rng)
        try unet.loadDiffusersWeights(Safetensors.read(weights).tensors, from: weights)
        if let classNames, let null = config.nullClassLabel, classNames.count != null {
            throw ConfigError(index, key: "id2label", "names \(classNames.count) classes; the unet's num_class_embeds \(null + 1) "
                                + "holds \(null) classes and the null label")
        }
        if schedulerConfig.varianceType.isLearned && config.outChannels != 2 * config.inChannels {
            throw ConfigError(configFile, key: "out_channels", "is \(config.outChannels); a learned variance (variance_type "
                                + "\(schedulerConfig.varianceType.rawValue)) needs twice in_channels, \(2 * config.inChannels)")
        }
        if classNames != nil && !config.isClassConditional {
            throw ConfigError(index, key: "id2label", "names classes, but the unet has no class embedding (num_class_embeds)")
        }
        return Pipeline(unet: unet, schedulerConfig: schedulerConfig, classNames: classNames)
    }

    /// Writes the folder diffusers' `DDPMPipeline.from_pretrained` reads, each file atomically.
    /// `weights` replaces the model's own parameters (an EMA copy, say); `dtype` F16 halves the size.
    public func save(to folder: URL, weights: [String: Tensor]? = nil, dtype: Safetensors.DType = .f32) throws {
        var index: [String: Any] = [
            "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", schedulerConfig.className], "unet": ["diffusers", "UNet2DModel"],
        ]
        if let classNames {
            index["id2label"] = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { (String($0.offset), $0.element) })
        }
        try writeAtomically(JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]),
                            to: folder.appendingPathComponent("model_index.json"))
        try writeAtomically(unet.config.json(), to: folder.appendingPathComponent("unet/config.json"))
        try Safetensors.write(weights ?? unet.stateDictionary, metadata: ["format": "pt"], dtype: dtype,
                              to: folder.appendingPathComponent("unet/\(Self.weightsName)"))
        try writeAtomically(schedulerConfig.json(), to: folder.appendingPathComponent("scheduler/scheduler_config.json"))
    }

    /// The samplers, each diffusers' scheduler class of that name.
    public enum SamplerKind: String, CaseIterable, Sendable {
        case ddpm, ddim, dpmSolver = "dpm++", euler, eulerAncestral = "euler-a", heun

        /// The one table of scheduler classes: diffusers' class name, and the scheduler made from a
        /// config (and DDIM's eta). Adding a sampler adds a case and a row here.
        static let classes: [SamplerKind: (className: String, make: @Sendable (SchedulerConfig, Float) throws -> any Scheduler)] = [
            .ddpm: ("DDPMScheduler", { c, _ in DDPMScheduler(config: c) }),
            .ddim: ("DDIMScheduler", { c, eta in try DDIMScheduler(config: c, eta: eta) }),
            .dpmSolver: ("DPMSolverMultistepScheduler", { c, _ in try DPMSolverScheduler(config: c) }),
            .euler: ("EulerDiscreteScheduler", { c, _ in try EulerScheduler(config: c) }),
            .eulerAncestral: ("EulerAncestralDiscreteScheduler", { c, _ in try EulerAncestralScheduler(config: c) }),
            .heun: ("HeunDiscreteScheduler", { c, _ in try HeunScheduler(config: c) }),
        ]

        public var className: String { Self.classes[self]!.className }

        /// This sampler's scheduler from a config (of this class; `converted(to:)` makes one from another's).
        public func make(_ config: SchedulerConfig, eta: Float = 0) throws -> any Scheduler { try Self.classes[self]!.make(config, eta) }

        /// The sampler of a diffusers scheduler class, nil for a class we do not compute.
        public init?(className: String) {
            guard let kind = Self.allCases.first(where: { Self.classes[$0]!.className == className }) else { return nil }
            self = kind
        }

        /// Inference steps when none are asked for: all of DDPM's, 50 for DDIM, 25 for the others.
        public func defaultSteps(_ trainTimesteps: Int) -> Int {
            switch self {
            case .ddpm: trainTimesteps
            case .ddim: min(50, trainTimesteps)
            default: min(25, trainTimesteps)
            }
        }
    }

    /// The folder's own sampler: its scheduler config's class (DDPM when we do not compute that class).
    public var defaultSampler: SamplerKind { SamplerKind(className: schedulerConfig.className) ?? .ddpm }

    /// A scheduler of the given kind made from this pipeline's config (as diffusers'
    /// `from_config` makes one class from another's config), with `steps` inference steps
    /// (default: all training timesteps for DDPM, 50 for DDIM, 25 for the others) and,
    /// optionally, another spacing, Karras sigmas or x_0 clipping.
    public func scheduler(_ kind: SamplerKind, steps: Int? = nil, eta: Float = 0,
                          spacing: SchedulerConfig.TimestepSpacing? = nil, karras: Bool? = nil, clipSample: Bool? = nil) throws -> any Scheduler {
        var config = try schedulerConfig.converted(to: kind.className)
        if let spacing { config.timestepSpacing = spacing }
        if let karras { config.useKarrasSigmas = karras }
        if let clipSample { config.clipSample = clipSample }
        var s = try kind.make(config, eta: eta)
        try s.setTimesteps(steps ?? kind.defaultSteps(config.numTrainTimesteps))
        return s
    }

    /// The shape of a batch of `count` samples.
    public func sampleShape(count: Int) -> [Int] {
        let c = unet.config
        return [count, c.inChannels, c.sampleSize, c.sampleSize]
    }

    /// The reverse process from `noise`, one step per element; `rng` supplies the schedulers' noise.
    /// A class-conditional model needs `classLabels` (one per image; the null label asks for p(x)),
    /// and follows them more strongly with `guidanceScale` > 1 (classifier-free guidance).
    public func denoise(_ noise: Tensor, with scheduler: any Scheduler, classLabels: [Int]? = nil, guidanceScale: Float = 1,
                        using rng: RandomGenerator) -> Denoising {
        denoise(from: scheduler.startingSample(noise), at: 0, with: scheduler, classLabels: classLabels, guidanceScale: guidanceScale, using: rng)
    }

    /// The reverse process from a sample already at the noise level of model call `index` (an
    /// image noised partway, for editing), through the scheduler's remaining calls.
    public func denoise(from sample: Tensor, at index: Int, with scheduler: any Scheduler, classLabels: [Int]? = nil,
                        guidanceScale: Float = 1, using rng: RandomGenerator) -> Denoising {
        Denoising(unet: unet, scheduler: scheduler, sample: sample, startIndex: index, rng: rng,
                  classLabels: classLabels, guidanceScale: guidanceScale)
    }

    /// The reverse process from `noise` [N, C, H, W], `batchSize` images at a time; batch b continues
    /// the scheduler's generator where batch b - 1 left it. `observe(images of the batch, step)` and
    /// `progress(model calls done, in all)` after every call. Sampling, editing and evaluation share
    /// this loop.
    public func generate(from noise: Tensor, with scheduler: any Scheduler, classLabels: [Int]? = nil, guidanceScale: Float = 1,
                         batchSize: Int, using rng: inout RandomGenerator, observe: (Range<Int>, Denoising.Step) -> Void = { _, _ in },
                         progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        generate(from: scheduler.startingSample(noise), startingAt: 0, with: scheduler,
                 classLabels: classLabels, guidanceScale: guidanceScale, batchSize: batchSize, using: &rng, observe: observe,
                 progress: progress)
    }

    /// `generate` from a sample already at the level of call `index`.
    public func generate(from sample: Tensor, startingAt index: Int, with scheduler: any Scheduler, classLabels: [Int]? = nil,
                         guidanceScale: Float = 1, batchSize: Int, using rng: inout RandomGenerator,
                         observe: (Range<Int>, Denoising.Step) -> Void = { _, _ in },
                         progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        var results: [Tensor] = []
        generateBatches(count: sample.shape[0], calls: scheduler.timesteps.count - index, batchSize: batchSize, using: &rng, loop: { range, rng in
            denoise(from: sample.slice(range), at: index, with: scheduler, classLabels: classLabels.map { Array($0[range]) },
                    guidanceScale: guidanceScale, using: rng)
        }, observe: observe, progress: progress, deliver: { _, images in results.append(images) })
        return Tensor.joined(results)
    }

    /// `count` images from fresh noise, streamed: each batch's noise is drawn when the batch starts
    /// and each finished batch goes to `deliver(its range, its images)` and is not kept, so any count
    /// fits in memory. The images equal `generate(from: Tensor.randomNormal(sampleShape(count:),
    /// using: &rng), ...)`: the noise is the same draws, and the schedulers' draws start after them.
    ///
    /// `share` (rank r of K) computes only batches b with b mod K = r, skipping the draws of the
    /// others (their noise, and the scheduler's draws they would make), so that K processes
    /// together make exactly the images one process makes; `deliver` sees this share's batches.
    public func generate(count: Int, with scheduler: any Scheduler, classLabels: [Int]? = nil, guidanceScale: Float = 1,
                         batchSize: Int, share: (rank: Int, ranks: Int) = (0, 1), using rng: inout RandomGenerator,
                         observe: (Range<Int>, Denoising.Step) -> Void = { _, _ in }, progress: (Int, Int) -> Void = { _, _ in },
                         deliver: (Range<Int>, Tensor) throws -> Void) rethrows {
        var noise = NormalStream(rng)
        let perImage = sampleShape(count: 1).reduce(1, *)
        rng.skipNormals(count * perImage)
        let calls = scheduler.timesteps.count
        let noisy = (0..<calls).filter { scheduler.needsNoise(index: $0) }.count
        try generateBatches(count: count, calls: calls, batchSize: batchSize, using: &rng, loop: { range, rng in
            // the batches of other shares before this one: their noise and their scheduler draws, skipped
            var batch = range.lowerBound / batchSize
            while batch % share.ranks != share.rank {
                let skipped = batch * batchSize ..< min((batch + 1) * batchSize, count)
                _ = noise.next(skipped.count * perImage)
                for _ in 0..<noisy { rng.skipNormals(skipped.count * perImage) }
                batch += 1
            }
            let own = batch * batchSize ..< min((batch + 1) * batchSize, count)
            let start = scheduler.startingSample(Tensor(shape: sampleShape(count: own.count), noise.next(own.count * perImage)))
            return denoise(from: start, at: 0, with: scheduler, classLabels: classLabels.map { Array($0[own]) },
                           guidanceScale: guidanceScale, using: rng)
        }, batches: { b in b % share.ranks == share.rank }, observe: observe, progress: progress, deliver: deliver)
    }

    /// The one batched loop that sampling, editing, inpainting and evaluation share: `count` images,
    /// `batchSize` at a time; `loop(range, &rng)` makes a batch's loop (a scheduler's `Denoising`, or
    /// RePaint's, which keeps its known pixels), which takes `calls` iterations and the generator
    /// where the batch before left it; `observe` and `progress` after each iteration, `deliver` each
    /// finished batch. Only the batches that `batches(b)` selects run (a rank's share); `loop` is
    /// then handed a range that starts at the first unselected batch before the one it makes, so that
    /// it can skip their draws.
    func generateBatches<Loop: DenoisingLoop>(count n: Int, calls: Int, batchSize: Int, using rng: inout RandomGenerator,
                                              loop makeLoop: (Range<Int>, inout RandomGenerator) -> Loop,
                                              batches: (Int) -> Bool = { _ in true },
                                              observe: (Range<Int>, Loop.Step) -> Void, progress: (Int, Int) -> Void,
                                              deliver: (Range<Int>, Tensor) throws -> Void) rethrows {
        let mine = (0..<((n + batchSize - 1) / batchSize)).filter(batches)
        let total = calls * mine.count
        var done = 0, next = 0
        for b in mine {
            let range = b * batchSize ..< min((b + 1) * batchSize, n)
            var loop = makeLoop(next * batchSize ..< range.upperBound, &rng)
            next = b + 1
            while let step = loop.next() {
                done += 1
                observe(range, step)
                progress(done, total)
            }
            rng = loop.rng
            try deliver(range, loop.sample)
        }
    }

    /// Starting noise from a float32 `.npy`: shaped [N, C, H, W] for this model, every value finite.
    public func noise(from url: URL) throws -> Tensor {
        let noise = try NPY.readTensor(url)
        let expected = sampleShape(count: noise.shape.first ?? 0)
        guard noise.shape == expected, noise.shape[0] >= 1 else {
            throw FormatError(url, "noise has shape \(noise.shape); this model needs [N, \(expected[1]), \(expected[2]), \(expected[3])]")
        }
        if let bad = noise.scalars.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(url, "noise holds a non-finite value (\(noise.scalars[bad])) at index \(bad)")
        }
        return noise
    }
}

/// One batch's reverse process, an iteration at a time: a scheduler's (`Denoising`) or RePaint's
/// (`RePainting`). `Pipeline.generateBatches` runs one per batch.
public protocol DenoisingLoop {
    associatedtype Step
    /// The next iteration, nil when done.
    mutating func next() -> Step?
    /// x after the iterations so far.
    var sample: Tensor { get }
    /// The generator's state after the iterations so far.
    var rng: RandomGenerator { get }
}

/// The reverse process as a sequence: each element is one scheduler step, so callers can show
/// progress or keep intermediate images without the library knowing about terminals.
public struct Denoising: Sequence, IteratorProtocol, DenoisingLoop {
    public struct Step {
        /// 0-based position and the number of steps in all.
        public let index: Int, count: Int
        public let timestep: Float
        /// x after this step.
        public let sample: Tensor
        /// The model's estimate of x_0 at this step.
        public let predictedOriginal: Tensor
    }

    let unet: UNet2DModel
    var scheduler: any Scheduler
    public private(set) var sample: Tensor
    /// The generator's state after the steps taken so far.
    public private(set) var rng: RandomGenerator
    let classLabels: [Int]?
    let guidanceScale: Float
    var index = 0
    /// The network's weights as its kernels want them, prepared at the first step for all.
    let prepared = FrozenWeights()

    init(unet: UNet2DModel, scheduler: any Scheduler, sample: Tensor, startIndex: Int, rng: RandomGenerator, classLabels: [Int]?,
         guidanceScale: Float) {
        require((classLabels != nil) == unet.config.isClassConditional,
                unet.config.isClassConditional ? "a class-conditional model samples with labels" : "an unconditional model takes no labels")
        require(classLabels == nil || classLabels!.count == sample.shape[0], "\(classLabels!.count) labels for \(sample.shape[0]) images")
        require(guidanceScale == 1 || unet.config.nullClassLabel != nil, "guidance needs a class-conditional model with a null label")
        require(startIndex >= 0 && startIndex <= scheduler.timesteps.count, "start at call \(startIndex) of \(scheduler.timesteps.count)")
        self.unet = unet; self.scheduler = scheduler; self.rng = rng; self.sample = sample; index = startIndex
        self.classLabels = classLabels; self.guidanceScale = guidanceScale
    }

    func prediction(at t: Float) -> Tensor {
        guidedPrediction(unet, scheduler.scaleModelInput(sample, index: index), timestep: t, classLabels: classLabels, guidanceScale: guidanceScale)
    }

    public mutating func next() -> Step? {
        let timesteps = scheduler.timesteps
        guard index < timesteps.count else { return nil }
        let t = timesteps[index]
        let output = withFrozenWeights(prepared) { withoutGradients { prediction(at: t) } }
        let step = scheduler.step(output, index: index, sample: sample, using: &rng)
        sample = step.previousSample
        index += 1
        return Step(index: index - 1, count: timesteps.count, timestep: t, sample: sample, predictedOriginal: step.predictedOriginal)
    }

    /// Runs every remaining step and returns the final sample.
    public mutating func run() -> Tensor {
        while next() != nil {}
        return sample
    }
}

/// The model's output for x at timestep t. With guidance (Ho & Salimans 2022, in diffusers'
/// convention s = 1 + w): eps = eps_uncond + s (eps_cond - eps_uncond), both halves in one batched pass.
func guidedPrediction(_ unet: UNet2DModel, _ x: Tensor, timestep t: Float, classLabels: [Int]?, guidanceScale: Float) -> Tensor {
    let n = x.shape[0], times = Array(repeating: t, count: n)
    guard let classLabels, guidanceScale != 1, let null = unet.config.nullClassLabel else {
        return unet(x, timesteps: times, classLabels: classLabels)
    }
    let both = unet(Tensor.joined([x, x]), timesteps: times + times, classLabels: classLabels + Array(repeating: null, count: n))
    let c = x.shape[1]
    let (conditional, variance) = splitVariance(both.slice(0..<n), channels: c)
    let unconditional = splitVariance(both.slice(n..<(2 * n)), channels: c).prediction
    let guided = classifierFreeGuidance(conditional: conditional, unconditional: unconditional, scale: guidanceScale)
    // a learned variance: the prediction is guided, the conditional half's variance kept (as DiT does)
    return variance.map { concatChannels([guided, $0]) } ?? guided
}

/// Classifier-free guidance (Ho & Salimans 2022) in diffusers' convention, s = 1 + w:
/// eps = eps_uncond + s (eps_cond - eps_uncond); s = 1 is the conditional prediction itself.
public func classifierFreeGuidance(conditional: Tensor, unconditional: Tensor, scale: Float) -> Tensor {
    scale == 1 ? conditional : unconditional + (conditional - unconditional) * scale
}

public enum PipelineError: Error, CustomStringConvertible, Equatable {
    case notAFolder(String)
    case missing(String, String)
    case pickled(String)

    public var description: String {
        switch self {
        case let .notAFolder(path): "\(path): not a model folder (expected a diffusers pipeline or unet folder)"
        case let .missing(path, what): "\(path): \(what) is missing"
        case let .pickled(path):
            "\(path): pickled PyTorch weights are not read (loading them can run code); convert them to safetensors once: "
                + "python -c \"from diffusers import UNet2DModel as U; U.from_pretrained('\((path as NSString).deletingLastPathComponent)')"
                + ".save_pretrained('\((path as NSString).deletingLastPathComponent)', safe_serialization=True)\""
        }
    }
}
