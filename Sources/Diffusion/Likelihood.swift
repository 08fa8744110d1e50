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
    /// The model's log variance at each t.
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
    public func term(t: Int, x0: UnsafePointer<Float>, xt: UnsafePointer<Float>, modelOutput: Tensor) -> Double {
        let d = modelOutput.count
        let xtTensor = Tensor(shape: modelOutput.shape, Array(UnsafeBufferPointer(start: xt, count: d)))
        let estimate = schedule.originalSample(from: modelOutput, type: config.predictionType, sample: xtTensor, timestep: t)
        var total = 0.0
        for i in 0..<d {
            let predicted = min(max(Double(estimate.pointer[i]), -1), 1)  // clip_denoised, as calc_bpd_loop
            let mean = meanX0[t] * predicted + meanXt[t] * Double(xt[i])
            if t == 0 {
                total -= discretizedGaussianLogLikelihood(Double(x0[i]), mean: mean, logScale: 0.5 * modelLogVariance[0])
            } else {
                let trueMean = meanX0[t] * Double(x0[i]) + meanXt[t] * Double(xt[i])
                total += normalKL(mean1: trueMean, logVariance1: posteriorLogVariance[t], mean2: mean, logVariance2: modelLogVariance[t])
            }
        }
        return total / Double(d) / M_LN2
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

/// The standard normal CDF by the tanh approximation improved-diffusion uses (so figures compare).
func approximateNormalCDF(_ x: Double) -> Double {
    0.5 * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
}

/// log P(x) for x one of 256 bins of width 2/255 over [-1, 1] under N(mean, e^(2 logScale)) (nats):
/// the mass of x's bin, the outermost bins open to -infinity and +infinity; probabilities are
/// clamped at 1e-12, as improved-diffusion's `discretized_gaussian_log_likelihood` does.
public func discretizedGaussianLogLikelihood(_ x: Double, mean: Double, logScale: Double) -> Double {
    let centred = x - mean, inverseScale = Foundation.exp(-logScale)
    let cdfPlus = approximateNormalCDF(inverseScale * (centred + 1 / 255))
    let cdfMinus = approximateNormalCDF(inverseScale * (centred - 1 / 255))
    if x < -0.999 { return Foundation.log(max(cdfPlus, 1e-12)) }
    if x > 0.999 { return Foundation.log(max(1 - cdfMinus, 1e-12)) }
    return Foundation.log(max(cdfPlus - cdfMinus, 1e-12))
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
    public func bitsPerDimension(_ images: Tensor, labels: [Int]? = nil, batch: Int = 64, using rng: inout RandomGenerator,
                                 progress: (Int) -> Void = { _ in }) -> BitsPerDimension {
        let bound = VariationalBound(config: schedulerConfig)
        let n = images.shape[0], shape = [1] + images.shape.dropFirst()
        var perImage: [Double] = [], sums = [Double](repeating: 0, count: bound.timesteps), prior = 0.0
        for i in 0..<n {
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
