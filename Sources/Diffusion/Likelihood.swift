import Foundation
import Layers
import Tensors

/// The variational bound on the negative log-likelihood (Ho et al. 2020, eq. 5) in bits per
/// dimension, term by term as improved-diffusion's `calc_bpd_loop` computes it, so that figures
/// compare with the papers':
///
///     L = L_T + sum_{t=1}^{T-1} L_{t-1} + L_0
///     L_T     = KL(q(x_T | x_0) || N(0, I))
///     L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),  x_t ~ q(x_t | x_0), one draw per t
///     L_0     = -log p(x_0 | x_1), a Gaussian discretised to the 256 bins of 8-bit data in [-1, 1]
///
/// each averaged over the D = C H W dimensions and divided by ln 2. The model's mean is the
/// posterior mean at its (clipped) x_0 estimate; its variance is the scheduler's: fixed_small the
/// posterior variance (its log clipped at t = 0 to t = 1's), fixed_large beta_t with the first
/// replaced by the posterior variance at t = 1. Arithmetic in Double from the float32 schedule.
public struct VariationalBound: Sendable {
    public let schedule: NoiseSchedule
    public let config: SchedulerConfig
    let abar: [Double], abarPrevious: [Double]
    /// Posterior q(x_{t-1} | x_t, x_0): mean coefficients of x_0 and x_t, clipped log variance.
    let meanX0: [Double], meanXt: [Double], posteriorLogVariance: [Double]
    /// The model's log variance at each t (fixed variances), or log beta_t (learned_range's upper end).
    let modelLogVariance: [Double]

    public init(config: SchedulerConfig) {
        self.config = config
        schedule = NoiseSchedule(config)
        let betas = schedule.betas.map(Double.init), n = betas.count
        abar = schedule.alphasCumprod.map(Double.init)
        abarPrevious = [1] + abar.dropLast()
        let (a, aPrevious) = (abar, abarPrevious)
        let variance: [Double] = (0..<n).map { (t: Int) -> Double in betas[t] * (1 - aPrevious[t]) / (1 - a[t]) }
        let clipped: [Double] = n > 1 ? [variance[1]] + variance.dropFirst() : variance
        posteriorLogVariance = clipped.map { Foundation.log($0) }
        meanX0 = (0..<n).map { (t: Int) -> Double in betas[t] * aPrevious[t].squareRoot() / (1 - a[t]) }
        meanXt = (0..<n).map { (t: Int) -> Double in (1 - aPrevious[t]) * (1 - betas[t]).squareRoot() / (1 - a[t]) }
        switch config.varianceType {
        case .fixedSmall, .fixedSmallLog:
            modelLogVariance = posteriorLogVariance
        case .fixedLarge, .fixedLargeLog:
            let large: [Double] = (n > 1 ? [variance[1]] : []) + betas.dropFirst()
            modelLogVariance = large.map { Foundation.log($0) }
        case .learned, .learnedRange:  // the model's, per element; log beta_t is the upper end of learned_range
            modelLogVariance = betas.map { Foundation.log($0) }
        }
    }

    public var timesteps: Int { schedule.count }

    /// L_T in bits per dimension for one image x_0 (D values in [-1, 1]).
    public func prior(_ x0: UnsafeBufferPointer<Float>) -> Double {
        let t = timesteps - 1, logVariance = Foundation.log(1 - abar[t])
        var total = 0.0
        for v in x0 { total += normalKL(mean1: abar[t].squareRoot() * Double(v), logVariance1: logVariance, mean2: 0, logVariance2: 0) }
        return total / Double(x0.count) / M_LN2
    }

    /// L_{t-1} (t > 0) or L_0 (t = 0) in bits per dimension for one image: x_0 and x_t, D values
    /// each, and the model's output at (x_t, t).
    public func term(t: Int, x0: UnsafePointer<Float>, xt: UnsafePointer<Float>, modelOutput output: Tensor) -> Double {
        var shape = output.shape
        if config.varianceType.isLearned { shape[1] /= 2 }
        let d = shape.reduce(1, *)
        let (modelOutput, variance) = splitVariance(output, channels: shape[1])
        let xtTensor = Tensor(shape: shape, Array(UnsafeBufferPointer(start: xt, count: d)))
        let estimate = schedule.originalSample(from: modelOutput, type: config.predictionType, sample: xtTensor, timestep: t)
        var total = 0.0
        for i in 0..<d {
            let predicted = min(max(Double(estimate.pointer[i]), -1), 1)  // clip_denoised, as calc_bpd_loop
            let mean = meanX0[t] * predicted + meanXt[t] * Double(xt[i])
            let logVariance = variance.map { learnedLogVariance(t: t, value: Double($0.pointer[i])) } ?? modelLogVariance[t]
            if t == 0 {
                total -= discretizedGaussianLogLikelihood(Double(x0[i]), mean: mean, logScale: 0.5 * logVariance)
            } else {
                let trueMean = meanX0[t] * Double(x0[i]) + meanXt[t] * Double(xt[i])
                total += normalKL(mean1: trueMean, logVariance1: posteriorLogVariance[t], mean2: mean, logVariance2: logVariance)
            }
        }
        return total / Double(d) / M_LN2
    }

    /// A learned variance's log at t from the model's value v: learned_range interpolates the
    /// clipped posterior log variance and log beta_t by (v + 1) / 2 (improved-diffusion); learned
    /// takes v as the variance (diffusers).
    func learnedLogVariance(t: Int, value v: Double) -> Double {
        if config.varianceType == .learned { return Foundation.log(max(v, 1e-20)) }
        let f = (v + 1) / 2
        return f * modelLogVariance[t] + (1 - f) * posteriorLogVariance[t]
    }

    /// L_vlb for training a learned_range variance (Nichol & Dhariwal 2021, the hybrid loss): the
    /// batch's terms L_{t-1} (L_0 at t = 0) in bits per dimension, averaged, times T / 1000 (as
    /// improved-diffusion scales it), differentiable in the variance values only: the mean comes
    /// from `prediction` with its gradient stopped, so L_simple alone trains it.
    public func learnedVarianceLoss(prediction: Tensor, variance: Tensor, x0: Tensor, xt: Tensor, timesteps: [Int]) -> Tensor {
        require(config.varianceType == .learnedRange, "the hybrid loss trains learned_range variances")
        let n = x0.shape[0], per = x0.count / n
        let estimate = Tensor.joined((0..<n).map { i in
            schedule.originalSample(from: prediction.detached.slice(i..<(i + 1)), type: config.predictionType,
                                    sample: xt.slice(i..<(i + 1)), timestep: timesteps[i])
        })
        let modelMean = Tensor(zeros: x0.shape), trueMean = Tensor(zeros: x0.shape), posterior = Tensor(zeros: x0.shape)
        var scale = [Float](), shift = [Float](), isFirst = [Float]()
        for i in 0..<n {
            let t = timesteps[i], (lo, hi) = (posteriorLogVariance[t], modelLogVariance[t])
            scale.append(Float((hi - lo) / 2)); shift.append(Float((hi + lo) / 2)); isFirst.append(t == 0 ? 1 : 0)
            for j in (i * per)..<((i + 1) * per) {
                let predicted = min(max(Double(estimate.pointer[j]), -1), 1)
                modelMean.pointer[j] = Float(meanX0[t] * predicted + meanXt[t] * Double(xt.pointer[j]))
                trueMean.pointer[j] = Float(meanX0[t] * Double(x0.pointer[j]) + meanXt[t] * Double(xt.pointer[j]))
                posterior.pointer[j] = Float(lo)
            }
        }
        let column = [n] + Array(repeating: 1, count: x0.rank - 1)
        // log variance = f log beta_t + (1 - f) log posterior variance, f = (v + 1) / 2
        let logVariance = variance * Tensor(shape: column, scale) + Tensor(shape: column, shift)
        let kl = logVariance.gaussianKL(mean1: trueMean, logVariance1: posterior, mean2: modelMean)
        let nll = logVariance.discretizedGaussianNLL(x: x0, mean: modelMean)
        let first = Tensor(shape: column, isFirst)
        let terms = kl + (nll - kl) * first
        return terms.mean() * Float(Double(schedule.count) / 1000 / M_LN2)
    }

    /// Every term of the bound for one image x_0 [1, C, H, W]: `noise(t)` gives the draw of x_t's
    /// noise; the U-Net runs `batch` timesteps at a time (with `classLabel` for a conditional model).
    /// Returns the terms by t (index 0: L_0) and L_T, in bits per dimension.
    public func terms(of x0: Tensor, unet: UNet2DModel, classLabel: Int? = nil, batch: Int = 64,
                      noise: (Int) -> Tensor) -> (terms: [Double], prior: Double) {
        let d = x0.count
        var terms = [Double](repeating: 0, count: timesteps)
        for start in stride(from: 0, to: timesteps, by: batch) {
            let ts = Array(start..<min(start + batch, timesteps))
            let xt = Tensor.joined(ts.map { t in schedule.addNoise(x0, noise: noise(t), timesteps: [t]) })
            let output = withoutGradients {
                unet(xt, timesteps: ts.map(Float.init), classLabels: classLabel.map { Array(repeating: $0, count: ts.count) })
            }
            for (row, t) in ts.enumerated() {
                terms[t] = term(t: t, x0: x0.pointer, xt: xt.pointer + row * d, modelOutput: output.slice(row..<(row + 1)))
            }
        }
        return (terms, prior(UnsafeBufferPointer(start: x0.pointer, count: d)))
    }
}

/// KL(N(mean1, e^logVariance1) || N(mean2, e^logVariance2)) for one dimension, in nats.
public func normalKL(mean1: Double, logVariance1: Double, mean2: Double, logVariance2: Double) -> Double {
    0.5 * (-1 + logVariance2 - logVariance1 + Foundation.exp(logVariance1 - logVariance2)
           + (mean1 - mean2) * (mean1 - mean2) * Foundation.exp(-logVariance2))
}

/// log P(x) of the discretised Gaussian decoder (Tensors' `discretizedLogLikelihood`, in nats).
public func discretizedGaussianLogLikelihood(_ x: Double, mean: Double, logScale: Double) -> Double {
    discretizedLogLikelihood(x, mean: mean, logScale: logScale).value
}
/// The bound over a set of images: each image's total, and the terms averaged over images.
public struct BitsPerDimension: Sendable {
    /// L for each image, bits per dimension.
    public let perImage: [Double]
    /// L_{t-1} by t (index 0: L_0) and L_T, averaged over the images.
    public let meanTerms: [Double], meanPrior: Double

    public var mean: Double { perImage.reduce(0, +) / Double(perImage.count) }
    /// The standard error of the mean over images (0 for one image).
    public var standardError: Double {
        let n = Double(perImage.count), m = mean
        guard n > 1 else { return 0 }
        return (perImage.reduce(0) { $0 + ($1 - m) * ($1 - m) } / (n - 1) / n).squareRoot()
    }
}

extension Pipeline {
    /// The variational bound of the model on `images` [N, C, H, W] in [-1, 1]: x_t's noise drawn
    /// from `rng` for every (image, t), `batch` timesteps of one image per U-Net call. A
    /// class-conditional model is scored with `labels` (p(x | y)), or the null label (p(x)) when
    /// nil. `progress(done)` is called after each image.
    ///
    /// `share` (rank r of K) scores only images i with i mod K = r, skipping the others' draws: its
    /// `perImage` holds 0 for the others' images and its sums only its own, so that the sums over
    /// the K shares (`merged`) are one process's result.
    public func bitsPerDimension(_ images: Tensor, labels: [Int]? = nil, batch: Int = 64, share: (rank: Int, ranks: Int) = (0, 1),
                                 using rng: inout RandomGenerator, progress: (Int) -> Void = { _ in }) -> BitsPerDimension {
        let bound = VariationalBound(config: schedulerConfig)
        let n = images.shape[0], shape = [1] + images.shape.dropFirst()
        var perImage: [Double] = [], sums = [Double](repeating: 0, count: bound.timesteps), prior = 0.0
        for i in 0..<n {
            guard i % share.ranks == share.rank else {
                for _ in 0..<bound.timesteps { rng.skipNormals(shape.reduce(1, *)) }
                perImage.append(0)
                continue
            }
            let x0 = images.slice(i..<(i + 1))
            let label = labels?[i] ?? unet.config.nullClassLabel
            let (terms, p) = bound.terms(of: x0, unet: unet, classLabel: label, batch: batch) { _ in
                Tensor.randomNormal(shape, using: &rng)
            }
            for t in terms.indices { sums[t] += terms[t] }
            prior += p
            perImage.append(terms.reduce(0, +) + p)
            progress(i + 1)
        }
        return BitsPerDimension(perImage: perImage, meanTerms: sums.map { $0 / Double(n) }, meanPrior: prior / Double(n))
    }
}

extension BitsPerDimension {
    /// Every number of this result as one vector (per image, the mean terms, the prior), and back:
    /// the shares of `bitsPerDimension(share:)` add up, element by element, to the whole result.
    public var packed: [Double] { perImage + meanTerms + [meanPrior] }

    public init(packed: [Double], images n: Int) {
        self.init(perImage: Array(packed[0..<n]), meanTerms: Array(packed[n..<(packed.count - 1)]), meanPrior: packed[packed.count - 1])
    }
}
