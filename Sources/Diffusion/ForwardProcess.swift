import Tensors

/// The forward process q(x_t | x_0) in closed form and the training objective (Ho et al. 2020,
/// eq. 4 and Algorithm 1), with each sample of a batch at its own timestep.
extension NoiseSchedule {
    /// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
    public func addNoise(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        mix(x0, noise, timesteps: timesteps) { abar in (abar.squareRoot(), (1 - abar).squareRoot()) }
    }

    /// v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022).
    public func velocity(_ x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        mix(x0, noise, timesteps: timesteps) { abar in (-(1 - abar).squareRoot(), abar.squareRoot()) }
    }

    /// What the network learns to predict: eps, x_0, or v.
    public func trainingTarget(_ type: SchedulerConfig.PredictionType, x0: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        switch type {
        case .epsilon: noise
        case .sample: x0
        case .vPrediction: velocity(x0, noise: noise, timesteps: timesteps)
        }
    }

    /// x_0 from x_t and a prediction of the given type.
    /// eps: (x_t - sqrt(1 - abar) eps) / sqrt(abar); v: sqrt(abar) x_t - sqrt(1 - abar) v.
    public func originalSample(from prediction: Tensor, type: SchedulerConfig.PredictionType, sample: Tensor, timestep t: Int) -> Tensor {
        let abar = alphasCumprod[t], a = abar.squareRoot(), b = (1 - abar).squareRoot()
        switch type {
        case .epsilon: return linearCombination(1 / a, sample, -b / a, prediction)
        case .sample: return prediction
        case .vPrediction: return linearCombination(a, sample, -b, prediction)
        }
    }

    /// eps from x_t and a prediction: from x_0, (x_t - sqrt(abar) x_0) / sqrt(1 - abar);
    /// from v, sqrt(abar) v + sqrt(1 - abar) x_t.
    public func epsilon(from prediction: Tensor, type: SchedulerConfig.PredictionType, sample: Tensor, timestep t: Int) -> Tensor {
        let abar = alphasCumprod[t], a = abar.squareRoot(), b = (1 - abar).squareRoot()
        switch type {
        case .epsilon: return prediction
        case .sample: return linearCombination(1 / b, sample, -a / b, prediction)
        case .vPrediction: return linearCombination(a, prediction, b, sample)
        }
    }

    /// Per-sample loss weights of min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) divided by SNR
    /// for eps prediction, by SNR + 1 for v prediction, and as is for x_0 prediction.
    public func minSNRWeights(timesteps: [Int], gamma: Float, predictionType: SchedulerConfig.PredictionType) -> [Float] {
        timesteps.map { t in
            let s = snr(t), clipped = min(s, gamma)
            switch predictionType {
            case .epsilon: return clipped / s
            case .vPrediction: return clipped / (s + 1)
            case .sample: return clipped
            }
        }
    }

    /// out[n] = a(abar_t) x[n] + b(abar_t) y[n], in float32 as diffusers computes it.
    private func mix(_ x: Tensor, _ y: Tensor, timesteps: [Int], _ coefficients: (Float) -> (Float, Float)) -> Tensor {
        require(x.shape == y.shape && x.shape[0] == timesteps.count,
                "forward process: x \(x.shape), noise \(y.shape), \(timesteps.count) timesteps")
        let per = x.count / timesteps.count
        let out = Tensor(zeros: x.shape)
        for (n, t) in timesteps.enumerated() {
            let (a, b) = coefficients(alphasCumprod[t])
            let xs = x.pointer + n * per, ys = y.pointer + n * per, o = out.pointer + n * per
            for i in 0..<per { o[i] = a * xs[i] + b * ys[i] }
        }
        return out
    }
}

/// The training loss: mean squared error, optionally weighted per sample (weights [N]):
/// (1/N) sum_n w_n mean_i (prediction - target)^2. Differentiable in `prediction`.
public func diffusionLoss(prediction: Tensor, target: Tensor, weights: [Float]? = nil) -> Tensor {
    guard let weights else { return meanSquaredError(prediction, target) }
    require(weights.count == prediction.shape[0], "\(weights.count) loss weights for batch \(prediction.shape[0])")
    let diff = prediction - target
    let w = Tensor(shape: [weights.count] + Array(repeating: 1, count: prediction.rank - 1), weights)
    return (diff * diff * w).mean()
}

/// a x + b y, elementwise, no gradient.
func linearCombination(_ a: Float, _ x: Tensor, _ b: Float, _ y: Tensor) -> Tensor {
    require(x.shape == y.shape, "combining \(x.shape) with \(y.shape)")
    let out = Tensor(zeros: x.shape)
    let xs = x.pointer, ys = y.pointer, o = out.pointer
    for i in 0..<x.count { o[i] = a * xs[i] + b * ys[i] }
    return out
}
