import Foundation

/// The one random generator of the project: xoshiro256** (Blackman & Vigna), seeded through
/// SplitMix64. Passed `inout` wherever randomness is used; its whole state is four words that
/// checkpoints save, so a resumed run draws exactly what an uninterrupted one would.
public struct RandomGenerator: RandomNumberGenerator, Codable, Equatable, Sendable {
    public var state: [UInt64]

    public init(seed: UInt64) {
        state = (1...4).map { Self.splitMix64(seed, $0) }
    }

    /// Word `index` of the SplitMix64 stream that starts at `seed` (Steele, Lea & Flood): a hash
    /// of (seed, index), so that any word can be had without the ones before it.
    @inline(__always)
    public static func splitMix64(_ seed: UInt64, _ index: Int) -> UInt64 {
        var z = seed &+ UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        let result = rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]
        state[3] ^= state[1]
        state[1] ^= state[2]
        state[0] ^= state[3]
        state[2] ^= t
        state[3] = rotl(state[3], 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1), 24 random bits.
    public mutating func uniform() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in (0, 1], 53 random bits.
    mutating func uniformOpenZero() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }

    /// Uniform integer in 0 ..< bound.
    public mutating func integer(below bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }

    /// Standard normal samples by Box-Muller, in pairs (an odd count discards the last partner).
    public mutating func normal(count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let r = (-2 * Foundation.log(uniformOpenZero())).squareRoot()
            let theta = 2 * Double.pi * uniformOpenZero()
            out[i] = Float(r * Foundation.cos(theta))
            if i + 1 < count { out[i + 1] = Float(r * Foundation.sin(theta)) }
            i += 2
        }
        return out
    }

    public mutating func normal() -> Float { normal(count: 1)[0] }

    /// The generator as it will be after `normal(count:)`: Box-Muller takes two words per pair.
    public mutating func skipNormals(_ count: Int) {
        for _ in 0..<(2 * ((count + 1) / 2)) { _ = next() }
    }
}

/// The values `normal(count: total)` would draw in one call, handed out a piece at a time (a
/// partner left over from a pair waits for the next piece), so that noise for any number of
/// images can be made a batch at a time and still equal the noise drawn all at once.
public struct NormalStream: Sendable {
    var rng: RandomGenerator
    var partner: Float? = nil

    public init(_ rng: RandomGenerator) { self.rng = rng }

    public mutating func next(_ count: Int) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(count)
        if count > 0, let p = partner { out.append(p); partner = nil }
        let needed = count - out.count
        let fresh = rng.normal(count: (needed + 1) / 2 * 2)  // whole pairs
        out += fresh.prefix(needed)
        if fresh.count > needed { partner = fresh[needed] }
        return out
    }
}

extension Tensor {
    /// Standard normal noise of the given shape.
    public static func randomNormal(_ shape: [Int], using rng: inout RandomGenerator, scale: Float = 1) -> Tensor {
        var values = rng.normal(count: shape.reduce(1, *))
        if scale != 1 { for i in values.indices { values[i] *= scale } }
        return Tensor(shape: shape, values)
    }

    /// Uniform noise in [low, high).
    public static func randomUniform(_ shape: [Int], low: Float, high: Float, using rng: inout RandomGenerator) -> Tensor {
        let s = Storage(uninitializedCount: shape.reduce(1, *))
        for i in 0..<s.count { s.pointer[i] = low + (high - low) * rng.uniform() }
        return Tensor(shape: shape, storage: s)
    }
}
