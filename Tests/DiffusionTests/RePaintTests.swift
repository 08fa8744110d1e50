import Foundation
import Testing
import Tensors
import TestSupport
@testable import Diffusion

/// RePaint against diffusers 0.42's RePaintScheduler and RePaintPipeline loop (Tests/Fixtures/make_repaint.py).
@Suite struct RePaintTests {
    static let fixture = try! Safetensors.read(fixtures.appendingPathComponent("repaint/repaint.safetensors")).tensors
    let pipeline = try! Pipeline.load(fixtures.appendingPathComponent("tiny-pipeline"))

    /// The timestep list with its jumps, including the paper's 250 steps, j = r = 10 (4,570 entries).
    @Test(arguments: [(20, 3, 3, "0.0"), (25, 5, 2, "0.7"), (250, 10, 10, "0.0")])
    func timestepsWithJumps(_ c: (Int, Int, Int, String)) throws {
        let repaint = try RePaintSchedule(config: pipeline.schedulerConfig, steps: c.0, jumpLength: c.1, jumpSamples: c.2)
        let expected = Self.fixture["n\(c.0)_j\(c.1)_r\(c.2)_eta\(c.3)/timesteps"]!.scalars.map { Int($0) }
        #expect(repaint.timesteps == expected)
        if c.0 == 250 { #expect(zip(expected, expected.dropFirst()).filter { $1 < $0 }.count + 1 == 2410) }
    }

    /// The whole loop from the same start and noises equals diffusers'; the known pixels come out
    /// exactly as the original's.
    @Test(arguments: [(20, 3, 3, Float(0)), (25, 5, 2, Float(0.7))])
    func loopMatchesDiffusers(_ c: (Int, Int, Int, Float)) throws {
        let key = "n\(c.0)_j\(c.1)_r\(c.2)_eta\(c.3 == 0 ? "0.0" : "0.7")"
        let repaint = try RePaintSchedule(config: pipeline.schedulerConfig, steps: c.0, jumpLength: c.1, jumpSamples: c.2, eta: c.3)
        let original = Self.fixture["original"]!, mask = Self.fixture["mask"]!
        var draws = 0
        let result = pipeline.inpaint(original, mask: mask, with: repaint, start: Self.fixture[key + "/start"]!) { k, shape in
            draws += 1
            return Tensor(shape: shape, (0..<shape.reduce(1, *)).map { Float(1.5 * sin(0.7 * Double(k) + 1.3 * Double($0) + 0.1)) })
        }
        #expect(Float(draws) == Self.fixture[key + "/draws"]!.item)
        let expected = Self.fixture[key + "/result"]!
        let worst = zip(result.scalars, expected.scalars).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4, "largest difference \(worst)")
        for i in 0..<result.count where mask.pointer[i % 64] == 1 { #expect(result.pointer[i] == original.pointer[i]) }
    }
}
