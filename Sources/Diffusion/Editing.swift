import Foundation
import Tensors

// Images as conditions, with no retraining: SDEdit (an image noised partway and denoised), DDIM
// inversion (an image encoded into the noise that decodes to it) and interpolation between two
// images through their noises (Song et al. 2021, sections 5.3-5.4).

extension Pipeline {
    /// Where SDEdit starts for a strength in [0, 1], as diffusers' img2img pipelines count it: of
    /// the scheduler's N steps the last min(floor(N strength), N) run, from model call
    /// (N - kept) x order. nil when no step is kept (strength 0, or N strength < 1).
    public static func editStart(strength: Float, scheduler: any Scheduler) -> Int? {
        let n = scheduler.stepCount
        let kept = min(Int(Float(n) * strength), n)
        return kept == 0 ? nil : (n - kept) * scheduler.order
    }

    /// SDEdit (Meng et al. 2022): `images` [N, C, H, W] in [-1, 1] noised to the level where the
    /// kept steps begin (`editStart`) with fresh noise from `rng`, then denoised. Strength 0 returns
    /// the images unchanged; strength 1 runs every step from the image at the noisiest level,
    /// where it still enters with weight sqrt(abar) (0.0064 at t = 999 on the linear schedule).
    public func edit(_ images: Tensor, strength: Float, with scheduler: any Scheduler, classLabels: [Int]? = nil,
                     guidanceScale: Float = 1, batchSize: Int = 64, using rng: inout RandomGenerator,
                     progress: (Int, Int) -> Void = { _, _ in }) -> Tensor {
        require(strength >= 0 && strength <= 1, "strength \(strength) is outside [0, 1]")
        guard let start = Self.editStart(strength: strength, scheduler: scheduler) else { return images.copy() }
        let noise = Tensor.randomNormal(images.shape, using: &rng)
        return generate(from: scheduler.addNoise(images, noise: noise, index: start), startingAt: start, with: scheduler,
                        classLabels: classLabels, guidanceScale: guidanceScale, batchSize: batchSize, using: &rng, progress: progress)
    }

    /// Deterministic DDIM encoding (eta 0) of `images` into the noise that `steps`-step DDIM
    /// decodes back to them, as diffusers' `DDIMInverseScheduler`: through the DDIM timesteps in
    /// ascending order, each step moves x from abar of t - T/N (1 before the first) to abar_t with
    /// the model's eps at t: x <- sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, x_0 = (x - sqrt(1 - abar) eps) / sqrt(abar).
    /// A class-conditional model encodes with `classLabels` (the null label for p(x)). Decode with
    /// x_0 clipping off (`scheduler(.ddim, steps:, clipSample: false)`): clipping is not invertible,
    /// and with it the bundled model's reconstructions are several times worse.
    public func invert(_ images: Tensor, steps: Int, classLabels: [Int]? = nil, batchSize: Int = 64,
                       progress: (Int, Int) -> Void = { _, _ in }) throws -> Tensor {
        var ddim = try DDIMScheduler(config: schedulerConfig.converted(to: "DDIMScheduler"))
        try ddim.setTimesteps(steps)
        let ascending = ddim.timesteps.reversed().map { Int($0) }
        let n = images.shape[0], total = ascending.count * ((n + batchSize - 1) / batchSize)
        var done = 0, parts: [Tensor] = []
        for b in stride(from: 0, to: n, by: batchSize) {
            let range = b..<min(b + batchSize, n)
            var x = images.slice(range)
            for t in ascending {
                let current = ddim.previousTimestep(t)  // the level x is at
                let abar = ddim.alphaCumprod(current), abarNext = ddim.alphaCumprod(t)
                let output = withoutGradients {
                    unet(x, timesteps: Array(repeating: Float(t), count: range.count), classLabels: classLabels.map { Array($0[range]) })
                }
                let eps = ddim.schedule.epsilon(from: splitVariance(output, channels: x.shape[1]).prediction,
                                                type: schedulerConfig.predictionType, sample: x, timestep: t)
                let x0 = linearCombination(1 / abar.squareRoot(), x, -(1 - abar).squareRoot() / abar.squareRoot(), eps)
                x = linearCombination(abarNext.squareRoot(), x0, (1 - abarNext).squareRoot(), eps)
                done += 1
                progress(done, total)
            }
            parts.append(x)
        }
        return Tensor.joined(parts)
    }
}

/// Spherical interpolation between two noise tensors of one shape (Shoemake 1985), which keeps
/// Gaussian noise at the norm the model expects where a straight line would shrink it:
/// sin((1 - t) theta) / sin theta a + sin(t theta) / sin theta b, theta the angle between them.
public func slerp(_ a: Tensor, _ b: Tensor, _ t: Float) -> Tensor {
    require(a.shape == b.shape, "slerp of \(a.shape) and \(b.shape)")
    var dot = 0.0, na = 0.0, nb = 0.0
    for i in 0..<a.count {
        let x = Double(a.pointer[i]), y = Double(b.pointer[i])
        dot += x * y; na += x * x; nb += y * y
    }
    let theta = acos(max(-1, min(1, dot / (na * nb).squareRoot())))
    if theta < 1e-6 { return linearCombination(1 - t, a, t, b) }
    let s = sin(theta)
    return linearCombination(Float(sin((1 - Double(t)) * theta) / s), a, Float(sin(Double(t) * theta) / s), b)
}
