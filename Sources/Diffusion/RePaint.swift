import Foundation
import Layers
import Tensors

/// RePaint (Lugmayr et al. 2022), as diffusers' `RePaintScheduler` and `RePaintPipeline`: inpainting
/// with an unconditional model. Each denoising step runs DDIM (with `eta`) on the unknown pixels and
/// replaces the known ones by the original noised to the same level; every `jumpLength` steps the
/// sample is re-noised `jumpLength` steps back up (`undo`) and denoised again, `jumpSamples` - 1
/// times, so the two parts can harmonise. `mask` 1 marks known pixels (diffusers' convention). With
/// `jumpSamples` 1 there are no jumps: the plain replacement method.
public struct RePaintSchedule: Sendable {
    public let schedule: NoiseSchedule
    public let steps: Int, jumpLength: Int, jumpSamples: Int
    public let eta: Float
    public let clipSample: Bool
    /// The timesteps in loop order: a step down (t below the previous) denoises, a step up re-noises.
    public let timesteps: [Int]

    public init(config: SchedulerConfig, steps: Int, jumpLength: Int = 10, jumpSamples: Int = 10, eta: Float = 0) throws {
        let t = config.numTrainTimesteps
        guard steps >= 1 && steps <= t else { throw SchedulerError.stepCount(steps, trainTimesteps: t) }
        guard eta >= 0 else { throw SchedulerError.negativeEta(eta) }
        require(jumpLength >= 1 && jumpSamples >= 1, "jump length and jump samples must be at least 1")
        schedule = NoiseSchedule(config)
        self.steps = steps; self.jumpLength = jumpLength; self.jumpSamples = jumpSamples
        self.eta = eta; clipSample = config.clipSample
        var jumps: [Int: Int] = [:]
        for j in Swift.stride(from: 0, to: steps - jumpLength, by: jumpLength) { jumps[j] = jumpSamples - 1 }
        var list: [Int] = [], k = steps
        while k >= 1 {
            k -= 1
            list.append(k)
            if let left = jumps[k], left > 0 {
                jumps[k] = left - 1
                for _ in 0..<jumpLength { k += 1; list.append(k) }
            }
        }
        timesteps = list.map { $0 * (t / steps) }
    }

    var stride: Int { schedule.count / steps }

    func alphaCumprod(_ t: Int) -> Float { t >= 0 ? schedule.alphasCumprod[t] : 1 }

    /// One denoising step from t: the unknown part by DDIM with eta, the known part the original
    /// noised to t' with the same `noise`; mixed by the mask.
    public func step(_ output: Tensor, timestep t: Int, sample: Tensor, original: Tensor, mask: Tensor, noise: Tensor) -> Tensor {
        let eps = splitVariance(output, channels: sample.shape[1]).prediction
        let previous = t - stride
        let abar = alphaCumprod(t), abarPrev = alphaCumprod(previous)
        var x0 = schedule.originalSample(from: eps, type: .epsilon, sample: sample, timestep: t)
        if clipSample { x0 = clamped(x0, 1) }
        let deviation = eta * ((1 - abarPrev) / (1 - abar) * (1 - abar / abarPrev)).squareRoot()
        var unknown = linearCombination(abarPrev.squareRoot(), x0, max(0, 1 - abarPrev - deviation * deviation).squareRoot(), eps)
        if t > 0 && eta > 0 { unknown = linearCombination(1, unknown, deviation, noise) }
        let known = linearCombination(abarPrev.squareRoot(), original, (1 - abarPrev).squareRoot(), noise)
        return masked(known, unknown, mask: mask)
    }

    /// Re-noising from t (the lower timestep) back up by `stride` forward steps, one noise each:
    /// x <- sqrt(1 - beta_{t+i}) x + sqrt(beta_{t+i}) z_i (diffusers indexes beta from t).
    public func undo(_ sample: Tensor, timestep t: Int, noises: [Tensor]) -> Tensor {
        require(noises.count == stride, "undo takes \(stride) noises, got \(noises.count)")
        var x = sample
        for (i, z) in noises.enumerated() {
            let beta = schedule.betas[t + i]
            x = linearCombination((1 - beta).squareRoot(), x, beta.squareRoot(), z)
        }
        return x
    }
}

/// mask * known + (1 - mask) * unknown, the mask [1 or N, 1 or C, H, W] broadcast over the batch and channels.
func masked(_ known: Tensor, _ unknown: Tensor, mask: Tensor) -> Tensor {
    let (n, c, h, w) = (known.shape[0], known.shape[1], known.shape[2], known.shape[3])
    let (mn, mc) = (mask.shape[0], mask.shape[1])
    require(mask.shape[2] == h && mask.shape[3] == w && (mn == 1 || mn == n) && (mc == 1 || mc == c), "mask \(mask.shape) for \(known.shape)")
    let out = unknown.copy()
    for b in 0..<n { for ch in 0..<c {
        let m = mask.pointer + ((mn == 1 ? 0 : b) * mc + (mc == 1 ? 0 : ch)) * h * w
        let k = known.pointer + (b * c + ch) * h * w, o = out.pointer + (b * c + ch) * h * w
        for i in 0..<(h * w) { o[i] = m[i] * k[i] + (1 - m[i]) * o[i] }
    } }
    return out
}

/// RePaint's loop over one batch: down the timestep list it denoises (a model call, the known
/// pixels put back noised to the new level), up it re-noises; every draw is standard normal noise
/// from `rng`, or from `replay(k, shape)` for the k-th draw when given (to replay a fixed sequence).
public struct RePainting: DenoisingLoop {
    let unet: UNet2DModel, repaint: RePaintSchedule
    let original: Tensor, mask: Tensor
    let classLabels: [Int]?, guidanceScale: Float
    let replay: ((Int, [Int]) -> Tensor)?
    public private(set) var sample: Tensor
    public private(set) var rng: RandomGenerator
    var index = 0, last: Int, drawn = 0
    let prepared = FrozenWeights()

    init(unet: UNet2DModel, repaint: RePaintSchedule, original: Tensor, mask: Tensor, start: Tensor, classLabels: [Int]?,
         guidanceScale: Float, rng: RandomGenerator, replay: ((Int, [Int]) -> Tensor)? = nil) {
        self.unet = unet; self.repaint = repaint; self.original = original; self.mask = mask
        self.classLabels = classLabels; self.guidanceScale = guidanceScale; self.replay = replay
        sample = start; self.rng = rng; last = repaint.timesteps[0] + 1
    }

    mutating func draw() -> Tensor {
        defer { drawn += 1 }
        return replay?(drawn, sample.shape) ?? Tensor.randomNormal(sample.shape, using: &rng)
    }

    /// The iteration's index in the timestep list.
    public mutating func next() -> Int? {
        guard index < repaint.timesteps.count else { return nil }
        let t = repaint.timesteps[index]
        if t < last {
            let (x, unet, labels, scale) = (sample, unet, classLabels, guidanceScale)
            let output = withFrozenWeights(prepared) {
                withoutGradients { guidedPrediction(unet, x, timestep: Float(t), classLabels: labels, guidanceScale: scale) }
            }
            sample = repaint.step(output, timestep: t, sample: sample, original: original, mask: mask, noise: draw())
        } else {
            let noises = (0..<repaint.stride).map { _ in draw() }
            sample = repaint.undo(sample, timestep: last, noises: noises)
        }
        last = t
        index += 1
        return index - 1
    }
}

extension Pipeline {
    /// Inpaints `images` [N, C, H, W] in [-1, 1] where `mask` is 0 (1 keeps a pixel), by RePaint from
    /// `start` noise. `noise(k, shape)` supplies the k-th noise the loop draws (one per denoising
    /// step, `stride` per re-noising), so that a fixed sequence can be replayed; the batched
    /// `inpaint(_:mask:with:batchSize:using:)` draws them from a generator.
    public func inpaint(_ images: Tensor, mask: Tensor, with repaint: RePaintSchedule, start: Tensor, classLabels: [Int]? = nil,
                        guidanceScale: Float = 1, noise: @escaping (Int, [Int]) -> Tensor, progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        var loop = RePainting(unet: unet, repaint: repaint, original: images, mask: mask, start: start, classLabels: classLabels,
                              guidanceScale: guidanceScale, rng: RandomGenerator(seed: 0), replay: noise)
        while let i = loop.next() { progress(i + 1, repaint.timesteps.count) }
        return loop.sample
    }

    /// RePaint `batchSize` images at a time through the shared batch loop, with noise from `rng`
    /// (each batch's start, then every draw in loop order). A mask of one image serves all; a mask
    /// per image is sliced with them.
    public func inpaint(_ images: Tensor, mask: Tensor, with repaint: RePaintSchedule, classLabels: [Int]? = nil, guidanceScale: Float = 1,
                        batchSize: Int = 64, using rng: inout RandomGenerator, progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        var parts: [Tensor] = []
        generateBatches(count: images.shape[0], calls: repaint.timesteps.count, batchSize: batchSize, using: &rng, loop: { range, rng in
            let batch = images.slice(range)
            let start = Tensor.randomNormal(batch.shape, using: &rng)
            return RePainting(unet: unet, repaint: repaint, original: batch, mask: mask.shape[0] == 1 ? mask : mask.slice(range), start: start,
                              classLabels: classLabels.map { Array($0[range]) }, guidanceScale: guidanceScale, rng: rng)
        }, observe: { _, _ in }, progress: progress, deliver: { _, images in parts.append(images) })
        return Tensor.joined(parts)
    }
}
