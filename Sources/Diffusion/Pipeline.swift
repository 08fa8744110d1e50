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
/// A bare unet folder (config.json + safetensors) also loads, with a default DDPM scheduler.
public final class Pipeline {
    public let unet: UNet2DModel
    public var schedulerConfig: SchedulerConfig

    public init(unet: UNet2DModel, schedulerConfig: SchedulerConfig) {
        self.unet = unet
        self.schedulerConfig = schedulerConfig
    }

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
        if fm.fileExists(atPath: index.path) {
            let r = try ConfigReader(file: index)
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
        return Pipeline(unet: unet, schedulerConfig: schedulerConfig)
    }

    /// Writes the folder diffusers' `DDPMPipeline.from_pretrained` reads, each file atomically.
    /// `weights` replaces the model's own parameters (an EMA copy, say); `dtype` F16 halves the size.
    public func save(to folder: URL, weights: [String: Tensor]? = nil, dtype: Safetensors.DType = .f32) throws {
        let index: [String: Any] = [
            "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", schedulerConfig.className], "unet": ["diffusers", "UNet2DModel"],
        ]
        try writeAtomically(JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]),
                            to: folder.appendingPathComponent("model_index.json"))
        try writeAtomically(unet.config.json(), to: folder.appendingPathComponent("unet/config.json"))
        try Safetensors.write(weights ?? unet.stateDictionary, metadata: ["format": "pt"], dtype: dtype,
                              to: folder.appendingPathComponent("unet/\(Self.weightsName)"))
        try writeAtomically(schedulerConfig.json(), to: folder.appendingPathComponent("scheduler/scheduler_config.json"))
    }

    public enum SamplerKind: String, CaseIterable, Sendable { case ddpm, ddim }

    /// A scheduler of the given kind from this pipeline's config, with `steps` inference steps
    /// (default: all training timesteps for DDPM, 50 for DDIM) and, optionally, another spacing.
    public func scheduler(_ kind: SamplerKind, steps: Int? = nil, eta: Float = 0,
                          spacing: SchedulerConfig.TimestepSpacing? = nil) throws -> any Scheduler {
        var config = schedulerConfig
        if let spacing { config.timestepSpacing = spacing }
        switch kind {
        case .ddpm:
            var s = DDPMScheduler(config: config)
            if let steps { try s.setTimesteps(steps) }
            return s
        case .ddim:
            var s = try DDIMScheduler(config: config, eta: eta)
            try s.setTimesteps(steps ?? min(50, config.numTrainTimesteps))
            return s
        }
    }

    /// The shape of a batch of `count` samples.
    public func sampleShape(count: Int) -> [Int] {
        let c = unet.config
        return [count, c.inChannels, c.sampleSize, c.sampleSize]
    }

    /// The reverse process from `noise`, one step per element; `rng` supplies the schedulers' noise.
    public func denoise(_ noise: Tensor, with scheduler: any Scheduler, using rng: RandomGenerator) -> Denoising {
        Denoising(unet: unet, scheduler: scheduler, sample: noise, rng: rng)
    }
}

/// The reverse process as a sequence: each element is one scheduler step, so callers can show
/// progress or keep intermediate images without the library knowing about terminals.
public struct Denoising: Sequence, IteratorProtocol {
    public struct Step {
        /// 0-based position and the number of steps in all.
        public let index: Int, count: Int
        public let timestep: Int
        /// x after this step.
        public let sample: Tensor
        /// The model's estimate of x_0 at this step.
        public let predictedOriginal: Tensor
    }

    let unet: UNet2DModel
    let scheduler: any Scheduler
    public private(set) var sample: Tensor
    /// The generator's state after the steps taken so far.
    public private(set) var rng: RandomGenerator
    var index = 0

    init(unet: UNet2DModel, scheduler: any Scheduler, sample: Tensor, rng: RandomGenerator) {
        self.unet = unet; self.scheduler = scheduler; self.sample = sample; self.rng = rng
    }

    public mutating func next() -> Step? {
        let timesteps = scheduler.timesteps
        guard index < timesteps.count else { return nil }
        let t = timesteps[index]
        let n = sample.shape[0]
        let output = withoutGradients { unet(sample, timesteps: Array(repeating: Float(t), count: n)) }
        let step = scheduler.step(output, timestep: t, sample: sample, using: &rng)
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
