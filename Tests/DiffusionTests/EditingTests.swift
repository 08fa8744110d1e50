import Foundation
import Testing
import Tensors
import TestSupport
@testable import Diffusion

/// SDEdit's strength and slerp on the tiny pipeline (inversion needs a trained model: BundledModelTests).
@Suite struct EditingTests {
    let pipeline = try! Pipeline.load(fixtures.appendingPathComponent("tiny-pipeline"))

    func images(_ seed: UInt64) -> Tensor {
        var rng = RandomGenerator(seed: seed)
        return Tensor(shape: [3, 1, 8, 8], (0..<192).map { _ in rng.uniform() * 2 - 1 })
    }

    /// diffusers' img2img rule: of N steps the last floor(N strength) run.
    @Test func editStartCountsAsDiffusers() throws {
        let ddim = try pipeline.scheduler(.ddim, steps: 50), heun = try pipeline.scheduler(.heun, steps: 10)
        #expect(Pipeline.editStart(strength: 0.3, scheduler: ddim) == 35)
        #expect(Pipeline.editStart(strength: 1, scheduler: ddim) == 0)
        #expect(Pipeline.editStart(strength: 0.019, scheduler: ddim) == nil)  // floor(0.95) = 0: no step kept
        #expect(Pipeline.editStart(strength: 0.5, scheduler: heun) == 10)  // two calls a step
    }

    /// Strength 0 (or too small to keep a step) returns the images unchanged.
    @Test func strengthZeroReturnsTheInput() throws {
        let x = images(1)
        var rng = RandomGenerator(seed: 2)
        for strength: Float in [0, 0.01] {
            let out = pipeline.edit(x, strength: strength, with: try pipeline.scheduler(.ddim, steps: 20), using: &rng)
            #expect(out.scalars == x.scalars)
        }
    }

    /// Strength 1 runs every step; a zero image then enters only through sqrt(1 - abar) of the first
    /// timestep's noise (or sigma for sqrt(sigma^2 + 1)), so the edit equals sampling from the same
    /// noise up to that factor, 1.4e-4 here (the tiny untrained model's unclipped outputs run to
    /// hundreds, so the comparison is relative).
    @Test func strengthOneOfAZeroImageIsSampling() throws {
        for kind in [Pipeline.SamplerKind.ddim, .dpmSolver, .euler] {
            let scheduler = try pipeline.scheduler(kind, steps: 10)
            var a = RandomGenerator(seed: 3), b = RandomGenerator(seed: 3)
            let edited = pipeline.edit(Tensor(zeros: [2, 1, 8, 8]), strength: 1, with: scheduler, using: &a)
            let noise = Tensor.randomNormal([2, 1, 8, 8], using: &b)
            let sampled = pipeline.generate(from: noise, with: scheduler, batchSize: 2, using: &b)
            let worst = zip(edited.scalars, sampled.scalars).map { abs($0 - $1) }.max()!
            let scale = sampled.scalars.map { abs($0) }.max()!
            #expect(worst < 1e-3 * max(scale, 1), "\(kind): \(worst) of \(scale)")
        }
    }

    /// Partway edits move the image, more with more strength, and keep its batch shape.
    @Test func strengthSetsHowFarAnEditMoves() throws {
        let x = images(4)
        func distance(_ strength: Float) throws -> Float {
            var rng = RandomGenerator(seed: 5)
            let out = pipeline.edit(x, strength: strength, with: try pipeline.scheduler(.ddim, steps: 20), using: &rng)
            return zip(out.scalars, x.scalars).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
        }
        let (small, large) = (try distance(0.1), try distance(0.9))
        #expect(small > 0 && small < large, "\(small) \(large)")
    }

    @Test func slerpKeepsTheEndsAndTheNorm() {
        var rng = RandomGenerator(seed: 7)
        let a = Tensor.randomNormal([1, 1, 16, 16], using: &rng), b = Tensor.randomNormal([1, 1, 16, 16], using: &rng)
        #expect(zip(slerp(a, b, 0).scalars, a.scalars).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(zip(slerp(a, b, 1).scalars, b.scalars).allSatisfy { abs($0 - $1) < 1e-5 })
        func norm(_ t: Tensor) -> Float { t.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot() }
        let middle = slerp(a, b, 0.5), straight = (a + b) * 0.5
        #expect(abs(norm(middle) - (norm(a) + norm(b)) / 2) < 0.1 * norm(a) && norm(straight) < 0.85 * norm(middle))
    }
}
