import Datasets
import Foundation
import Layers
import Tensors

/// The hyperparameters of a training run, saved with every checkpoint.
public struct TrainingOptions: Codable, Equatable, Sendable {
    /// Total optimiser steps (a resumed run continues to this count).
    public var steps = 10_000
    public var batchSize = 64
    public var learningRate: Float = 2e-4
    /// Linear warmup steps (diffusers' constant schedule with warmup).
    public var warmup = 500
    /// The EMA's largest decay; it warms up as in diffusers' training example.
    public var emaDecay: Float = 0.9999
    public var seed: UInt64 = 0
    /// Global gradient-norm clip (Ho et al.: 1).
    public var gradientClip: Float = 1
    public var weightDecay: Float = 0
    /// min-SNR-gamma loss weighting (Hang et al. 2023); nil: plain MSE.
    public var minSNRGamma: Float? = nil
    /// Random horizontal flips of the training images.
    public var flip = false
    /// Class-conditional runs: the probability that a label is replaced by the null label, so that
    /// one network learns p(x | y) and p(x) for classifier-free guidance (Ho & Salimans: 0.1).
    public var labelDropout: Float? = nil
    /// Learning-rate factors for parameter groups, keyed by a name prefix (`class_embedding`: the
    /// class table a warm start adds learns at this many times the rate of the weights it joins).
    public var learningRateScales: [String: Float]? = nil
    /// Micro-batches per optimiser step (diffusers' `--gradient_accumulation_steps`): the batch is
    /// cut into this many slices whose gradients add up to the whole batch's before one update, so a
    /// batch that does not fit in memory trains as if it did. nil or 1: the whole batch at once.
    public var gradientAccumulationSteps: Int? = nil

    public init() {}
}

/// Trains a `Pipeline`'s U-Net by Algorithm 1 of Ho et al.: per step, t ~ U{0..T-1} and eps ~ N(0, I)
/// for each image, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, MSE of the prediction against eps
/// (or x_0, or v), backward, gradient-norm clip, AdamW, EMA.
///
/// A checkpoint is a diffusers pipeline folder holding the EMA weights in `unet/` (as diffusers'
/// training example saves them), plus `training/` with what diffusers has no place for: the raw
/// weights, the optimiser's moments, the step, the generator's state and the options. Resuming
/// from it continues bit for bit as if the run had never stopped.
/// How a training step is spread over processes, without this module knowing how they talk: this
/// process is `rank` of `ranks` and computes that share of every batch; `sum` replaces a buffer
/// on every process by its sum over them (MPI's all-reduce; nothing alone).
public struct DataParallel {
    public var rank = 0, ranks = 1
    public var sum: (UnsafeMutablePointer<Float>, Int) -> Void = { _, _ in }
    public init() {}
    public init(rank: Int, ranks: Int, sum: @escaping (UnsafeMutablePointer<Float>, Int) -> Void) {
        self.rank = rank; self.ranks = ranks; self.sum = sum
    }
}

public final class Trainer {
    public let pipeline: Pipeline
    public var options: TrainingOptions
    public let schedule: NoiseSchedule
    public let optimizer: AdamW
    public let ema: ExponentialMovingAverage
    public private(set) var step = 0
    /// Draws timesteps, noise and dropout masks; saved with checkpoints.
    public private(set) var rng: RandomGenerator
    /// (step, loss, learning rate) of every step taken.
    public private(set) var log: [(step: Int, loss: Float, learningRate: Float)] = []

    public var unet: UNet2DModel { pipeline.unet }
    /// Data parallelism: one process alone unless the command line sets it.
    public var parallel = DataParallel()
    /// Seconds spent in the gradient sums over processes, and floats summed per step.
    public private(set) var reduceSeconds = 0.0, reducedFloats = 0
    /// For a learned_range variance: the bound whose terms train it.
    let learnedVariance: VariationalBound?

    public init(pipeline: Pipeline, options: TrainingOptions) {
        self.pipeline = pipeline
        self.options = options
        schedule = NoiseSchedule(pipeline.schedulerConfig)
        optimizer = AdamW(parameters: pipeline.unet.parameterTensors, learningRate: options.learningRate,
                          weightDecay: options.weightDecay)
        if let scales = options.learningRateScales {
            optimizer.learningRateScales = pipeline.unet.parameters.map { p in
                scales.filter { p.name == $0.key || p.name.hasPrefix($0.key + ".") }.max { $0.key.count < $1.key.count }?.value ?? 1
            }
        }
        ema = ExponentialMovingAverage(parameters: pipeline.unet.parameterTensors, decay: .warmup(maxDecay: options.emaDecay))
        rng = RandomGenerator(seed: options.seed &+ 1)
        learnedVariance = pipeline.schedulerConfig.varianceType == .learnedRange ? VariationalBound(config: pipeline.schedulerConfig) : nil
    }

    /// One optimiser step on a batch x_0 [B, C, H, W] in [-1, 1], with its class labels when the
    /// model is class-conditional. Returns the loss; when it is not finite, nothing is updated
    /// (the caller stops and keeps its last checkpoint).
    @discardableResult
    public func train(on x0: Tensor, labels: [Int]? = nil) -> Float {
        let batch = x0.shape[0]
        require((labels != nil) == unet.config.isClassConditional,
                unet.config.isClassConditional ? "a class-conditional model trains on labelled images" : "an unconditional model takes no labels")
        let timesteps = (0..<batch).map { _ in rng.integer(below: schedule.count) }
        let noise = Tensor.randomNormal(x0.shape, using: &rng)
        var labels = labels
        if let given = labels, let p = options.labelDropout, p > 0, let null = unet.config.nullClassLabel {
            labels = given.map { rng.uniform() < p ? null : $0 }
        }
        let xt = schedule.addNoise(x0, noise: noise, timesteps: timesteps)
        let type = pipeline.schedulerConfig.predictionType
        let target = schedule.trainingTarget(type, x0: x0, noise: noise, timesteps: timesteps)
        let weights = options.minSNRGamma.map { schedule.minSNRWeights(timesteps: timesteps, gamma: $0, predictionType: type) }

        let learningRate = warmupLearningRate(base: options.learningRate, step: step, warmup: options.warmup)
        optimizer.learningRate = learningRate
        unet.zeroGradients()
        // The batch's draws are made above, whole and alike on every process; this process takes
        // its shard of the rows, in micro-batches, each mean loss weighted by its share of the
        // batch, so that the gradients summed over micro-batches and processes are the whole
        // batch's. Dropout masks (where the config has dropout) come from a generator of their own
        // for each micro-batch, so that every process's main generator stays the same.
        let shard = batch * parallel.rank / parallel.ranks ..< batch * (parallel.rank + 1) / parallel.ranks
        let slices = max(1, min(options.gradientAccumulationSteps ?? 1, shard.count))
        let dropoutSeed = unet.config.dropout > 0 ? rng.next() : 0
        var value: Float = 0
        for m in 0..<slices {
            let rows = shard.lowerBound + shard.count * m / slices ..< shard.lowerBound + shard.count * (m + 1) / slices
            func part(_ t: Tensor) -> Tensor { rows.count == batch ? t : t.slice(rows) }
            let xtm = part(xt), x0m = part(x0), tm = Array(timesteps[rows])
            var masks = RandomGenerator(seed: dropoutSeed &+ UInt64(parallel.rank * 1_000_003 + m))  // unused without dropout
            let output = unet.training(xtm, timesteps: tm.map(Float.init), classLabels: labels.map { Array($0[rows]) }, using: &masks)
            var loss: Tensor
            if let bound = learnedVariance {
                // the hybrid loss of Nichol & Dhariwal: L_simple + lambda L_vlb, lambda = 0.001 (in the T / 1000 scale)
                let (prediction, variance) = splitVariance(output, channels: x0.shape[1])
                loss = diffusionLoss(prediction: prediction, target: part(target), weights: weights.map { Array($0[rows]) })
                    + bound.learnedVarianceLoss(prediction: prediction, variance: variance!, x0: x0m, xt: xtm, timesteps: tm)
            } else {
                loss = diffusionLoss(prediction: output, target: part(target), weights: weights.map { Array($0[rows]) })
            }
            if rows.count < batch { loss = loss * (Float(rows.count) / Float(batch)) }
            let share = loss.item
            value += share
            if parallel.ranks == 1 && !share.isFinite { return share }  // alone, stop at once; together, after the sum
            loss.backward()
        }
        if parallel.ranks > 1 { value = allReduceGradients(loss: value) }
        guard value.isFinite else { return value }
        clipGradientNorm(optimizer.parameters, maxNorm: options.gradientClip)
        optimizer.update()
        step += 1
        ema.update(step: step)
        log.append((step, value, learningRate))
        return value
    }

    /// Sums every parameter's gradient and the loss over the processes, in one buffer; returns the
    /// batch's loss. Every process then holds the same gradients and takes the same step.
    func allReduceGradients(loss: Float) -> Float {
        let parameters = optimizer.parameters
        let count = parameters.reduce(0) { $0 + $1.count }
        let buffer = Storage(zeros: count + 1)
        var offset = 0
        for p in parameters {
            if let g = p.gradient { (buffer.pointer + offset).update(from: g.pointer, count: p.count) }
            offset += p.count
        }
        buffer.pointer[count] = loss
        let began = Date()
        parallel.sum(buffer.pointer, count + 1)
        reduceSeconds += Date().timeIntervalSince(began)
        reducedFloats = count + 1
        offset = 0
        for p in parameters {
            if let g = p.gradient { g.pointer.update(from: buffer.pointer + offset, count: p.count) }
            offset += p.count
        }
        return buffer.pointer[count]
    }

    /// One optimiser step on a batch from the data loader (its labels are used by a class-conditional model only).
    @discardableResult
    public func train(on batch: Batch) -> Float {
        train(on: batch.images, labels: unet.config.isClassConditional ? batch.labels : nil)
    }

    /// The EMA weights by parameter name.
    public var emaWeights: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: zip(unet.parameters.map(\.name), ema.shadow))
    }

    /// Runs `body` with the EMA weights in the model (to sample with them), then puts the raw ones back.
    public func withEMAWeights<T>(_ body: () throws -> T) rethrows -> T {
        let raw = unet.parameterTensors.map { $0.copy() }
        for (p, s) in zip(unet.parameterTensors, ema.shadow) { p.pointer.update(from: s.pointer, count: p.count) }
        defer { for (p, r) in zip(unet.parameterTensors, raw) { p.pointer.update(from: r.pointer, count: p.count) } }
        return try body()
    }

    // MARK: Checkpoints

    struct State: Codable {
        var format = 1
        var step: Int
        var options: TrainingOptions
        var rng: RandomGenerator
        var data: String
    }

    /// Writes the checkpoint so that a kill at any moment leaves one complete checkpoint: everything
    /// resuming needs (raw and EMA weights, optimiser, generator, options, log) goes into
    /// `training.partial/`, `state.json` last; then `training/` is swapped for it by two renames
    /// (`recoverCheckpoint` finishes a swap a kill interrupted). The diffusers folder (`unet/` with
    /// the EMA weights, configs) is written after, each file atomically. A save that fails (a full
    /// disk) throws and leaves the previous checkpoint as it was.
    public func save(to folder: URL, dataSource: String) throws {
        let fm = FileManager.default
        let stepTag = ["step": String(step)]
        let training = folder.appendingPathComponent("training"), partial = folder.appendingPathComponent("training.partial")
        let old = folder.appendingPathComponent("training.old")
        try? fm.removeItem(at: partial)
        do {
            try fm.createDirectory(at: partial, withIntermediateDirectories: true)
            try Safetensors.write(unet.stateDictionary, metadata: stepTag, to: partial.appendingPathComponent("unet.safetensors"))
            try Safetensors.write(emaWeights, metadata: stepTag, to: partial.appendingPathComponent("ema.safetensors"))
            var moments: [String: Tensor] = [:]
            let state = optimizer.state
            for (i, name) in unet.parameters.map(\.name).enumerated() {
                moments["exp_avg.\(name)"] = state.moments[2 * i].reshaped(unet.parameters[i].tensor.shape)
                moments["exp_avg_sq.\(name)"] = state.moments[2 * i + 1].reshaped(unet.parameters[i].tensor.shape)
            }
            try Safetensors.write(moments, metadata: stepTag.merging(["optimizer_step": String(state.step)]) { a, _ in a },
                                  to: partial.appendingPathComponent("optimizer.safetensors"))
            var csv = "step,loss,learning_rate\n"
            for e in log { csv += "\(e.step),\(e.loss),\(e.learningRate)\n" }
            try writeAtomically(Data(csv.utf8), to: partial.appendingPathComponent("log.csv"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeAtomically(encoder.encode(State(step: step, options: options, rng: rng, data: dataSource)),
                                to: partial.appendingPathComponent("state.json"))
            try pipeline.save(to: folder, weights: emaWeights)
        } catch {
            try? fm.removeItem(at: partial)
            let kept = (try? Self.loadState(folder)).map { "the checkpoint of step \($0.step) is intact" } ?? "no earlier checkpoint"
            throw CheckpointError(folder: folder.path, step: step, reason: "\(error)", kept: kept)
        }
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: training.path) { try fm.moveItem(at: training, to: old) }
        try fm.moveItem(at: partial, to: training)
        try? fm.removeItem(at: old)
    }

    /// Finishes what a kill during `save` left: a swap half done (`training/` gone, `training.partial/`
    /// complete or `training.old/` still there) is completed or undone, leftovers removed.
    public static func recoverCheckpoint(in folder: URL) {
        let fm = FileManager.default
        let training = folder.appendingPathComponent("training"), partial = folder.appendingPathComponent("training.partial")
        let old = folder.appendingPathComponent("training.old")
        if !fm.fileExists(atPath: training.appendingPathComponent("state.json").path) {
            if fm.fileExists(atPath: partial.appendingPathComponent("state.json").path) {
                try? fm.removeItem(at: training)
                try? fm.moveItem(at: partial, to: training)
            } else if fm.fileExists(atPath: old.appendingPathComponent("state.json").path) {
                try? fm.removeItem(at: training)
                try? fm.moveItem(at: old, to: training)
            }
        }
        try? fm.removeItem(at: partial)
        try? fm.removeItem(at: old)
    }

    /// The data source recorded in a checkpoint.
    public static func savedDataSource(in folder: URL) throws -> String {
        try loadState(folder).data
    }

    static func loadState(_ folder: URL) throws -> State {
        recoverCheckpoint(in: folder)
        let url = folder.appendingPathComponent("training/state.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw PipelineError.missing(url.path, "the training state (is this a checkpoint written by ddpm train?)")
        }
        do { return try JSONDecoder().decode(State.self, from: data) } catch {
            throw FormatError(url, "not a training state (\(error))")
        }
    }

    /// Continues from a checkpoint. `steps` may raise the total.
    public static func resume(from folder: URL, steps: Int? = nil) throws -> Trainer {
        let state = try loadState(folder)
        let pipeline = try Pipeline.load(folder)  // EMA weights in the model for now
        var options = state.options
        if let steps { options.steps = steps }
        let trainer = Trainer(pipeline: pipeline, options: options)
        let training = folder.appendingPathComponent("training")
        // the EMA weights of the checkpoint itself (checkpoints older than ema.safetensors: unet/'s)
        let emaURL = training.appendingPathComponent("ema.safetensors")
        if FileManager.default.fileExists(atPath: emaURL.path) {
            let ema = try Safetensors.read(emaURL)
            guard ema.metadata["step"] == String(state.step) else {
                throw FormatError(emaURL, "holds step \(ema.metadata["step"] ?? "?"), the state says \(state.step): an interrupted save")
            }
            try pipeline.unet.load(ema.tensors, from: emaURL)
        }
        for (s, p) in zip(trainer.ema.shadow, pipeline.unet.parameterTensors) { s.pointer.update(from: p.pointer, count: p.count) }

        let rawURL = training.appendingPathComponent("unet.safetensors")
        let raw = try Safetensors.read(rawURL)
        guard raw.metadata["step"] == String(state.step) else {
            throw FormatError(rawURL, "holds step \(raw.metadata["step"] ?? "?"), the state says \(state.step): an interrupted save")
        }
        try pipeline.unet.load(raw.tensors, from: rawURL)
        let optimizerURL = training.appendingPathComponent("optimizer.safetensors")
        let saved = try Safetensors.read(optimizerURL)
        guard saved.metadata["step"] == String(state.step), let optimizerStep = saved.metadata["optimizer_step"].flatMap(Int.init) else {
            throw FormatError(optimizerURL, "holds step \(saved.metadata["step"] ?? "?"), the state says \(state.step): an interrupted save")
        }
        var moments: [Tensor] = []
        for (name, p) in pipeline.unet.parameters {
            for key in ["exp_avg.\(name)", "exp_avg_sq.\(name)"] {
                guard let t = saved.tensors[key], t.shape == p.shape else { throw FormatError(optimizerURL, "tensor '\(key)' is missing or misshaped") }
                moments.append(t)
            }
        }
        trainer.optimizer.restore(step: optimizerStep, moments: moments)
        trainer.step = state.step
        trainer.rng = state.rng
        if let csv = try? String(contentsOf: training.appendingPathComponent("log.csv"), encoding: .utf8) {
            for line in csv.split(separator: "\n").dropFirst() {
                let f = line.split(separator: ",")
                if f.count == 3, let s = Int(f[0]), let l = Float(f[1]), let r = Float(f[2]), s <= state.step { trainer.log.append((s, l, r)) }
            }
        }
        return trainer
    }
}

/// A checkpoint that could not be written, and what is left.
public struct CheckpointError: Error, CustomStringConvertible {
    public let folder: String, step: Int, reason: String, kept: String
    public var description: String { "\(folder): the checkpoint of step \(step) could not be written (\(reason)); \(kept)" }
}
