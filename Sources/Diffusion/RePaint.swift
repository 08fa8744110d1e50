import Foundation
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
        precondition(jumpLength >= 1 && jumpSamples >= 1, "jump length and jump samples must be at least 1")
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
        precondition(noises.count == stride, "undo takes \(stride) noises, got \(noises.count)")
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
    precondition(mask.shape[2] == h && mask.shape[3] == w && (mn == 1 || mn == n) && (mc == 1 || mc == c), "mask \(mask.shape) for \(known.shape)")
    let out = unknown.copy()
    for b in 0..<n { for ch in 0..<c {
        let m = mask.pointer + ((mn == 1 ? 0 : b) * mc + (mc == 1 ? 0 : ch)) * h * w
        let k = known.pointer + (b * c + ch) * h * w, o = out.pointer + (b * c + ch) * h * w
        for i in 0..<(h * w) { o[i] = m[i] * k[i] + (1 - m[i]) * o[i] }
    } }
    return out
}

extension Pipeline {
    /// Inpaints `images` [N, C, H, W] in [-1, 1] where `mask` is 0 (1 keeps a pixel), by RePaint from
    /// `start` noise. `noise(k)` supplies the k-th noise the loop draws (one per denoising step,
    /// `stride` per re-noising), so that a fixed sequence can be replayed; `inpaint(_:mask:using:)`
    /// draws them from a generator.
    public func inpaint(_ images: Tensor, mask: Tensor, with repaint: RePaintSchedule, start: Tensor, classLabels: [Int]? = nil,
                        guidanceScale: Float = 1, noise: (Int, [Int]) -> Tensor, progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        var x = start, last = repaint.timesteps[0] + 1, drawn = 0
        func next() -> Tensor { defer { drawn += 1 }; return noise(drawn, x.shape) }
        for (i, t) in repaint.timesteps.enumerated() {
            if t < last {
                let output = withoutGradients {
                    guidedPrediction(unet, x, timestep: Float(t), classLabels: classLabels, guidanceScale: guidanceScale)
                }
                x = repaint.step(output, timestep: t, sample: x, original: images, mask: mask, noise: next())
            } else {
                x = repaint.undo(x, timestep: last, noises: (0..<repaint.stride).map { _ in next() })
            }
            last = t
            progress(i + 1, repaint.timesteps.count)
        }
        return x
    }

    /// RePaint `batchSize` images at a time, with noise from `rng` (each batch's start, then every
    /// draw in loop order). A mask of one image serves all; a mask per image is sliced with them.
    public func inpaint(_ images: Tensor, mask: Tensor, with repaint: RePaintSchedule, classLabels: [Int]? = nil, guidanceScale: Float = 1,
                        batchSize: Int = 64, using rng: inout RandomGenerator, progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        let n = images.shape[0], iterations = repaint.timesteps.count
        var generator = rng, parts: [Tensor] = []
        defer { rng = generator }
        for (k, b) in stride(from: 0, to: n, by: batchSize).enumerated() {
            let range = b..<min(b + batchSize, n)
            let start = Tensor.randomNormal(images.slice(range).shape, using: &generator)
            parts.append(inpaint(images.slice(range), mask: mask.shape[0] == 1 ? mask : mask.slice(range), with: repaint, start: start,
                                 classLabels: classLabels.map { Array($0[range]) }, guidanceScale: guidanceScale,
                                 noise: { _, shape in Tensor.randomNormal(shape, using: &generator) },
                                 progress: { done, _ in progress(k * iterations + done, iterations * ((n + batchSize - 1) / batchSize)) }))
        }
        return Tensor.joined(parts)
    }
}
