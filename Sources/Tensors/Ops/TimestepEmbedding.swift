import Foundation

/// The sinusoidal embedding of diffusion timesteps (Vaswani et al. 2017, as DDPM uses it), with
/// diffusers' `get_timestep_embedding` semantics: half = dim / 2 frequencies
/// f_i = exp(-ln(maxPeriod) i / (half - shift)), result [sin(t f), cos(t f)], or [cos, sin] with
/// `flipSinToCos`; an odd dim is padded with a zero column. Computed in float32 step by step as
/// PyTorch does, so results match to rounding. No gradient: timesteps are data.
public func timestepEmbedding(_ timesteps: [Float], dimension: Int, flipSinToCos: Bool,
                              downscaleFreqShift: Float, scale: Float = 1, maxPeriod: Float = 10_000) -> Tensor {
    let half = dimension / 2
    let logPeriod = -Float(Foundation.log(Double(maxPeriod)))
    let frequencies = (0..<half).map { i in Foundation.expf(logPeriod * Float(i) / (Float(half) - downscaleFreqShift)) }
    var values = [Float](repeating: 0, count: timesteps.count * dimension)
    for (n, t) in timesteps.enumerated() {
        for i in 0..<half {
            let arg = scale * (t * frequencies[i])
            let (first, second) = flipSinToCos ? (Foundation.cosf(arg), Foundation.sinf(arg))
                                               : (Foundation.sinf(arg), Foundation.cosf(arg))
            values[n * dimension + i] = first
            values[n * dimension + half + i] = second
        }
    }
    return Tensor(shape: [timesteps.count, dimension], values)
}
