import Datasets
import Foundation
import Testing
import Tensors
import TestSupport

/// `ddpm edit`, `ddpm invert` and `ddpm interpolate` on the tiny pipeline.
@Suite struct EditCommandTests {
    let tiny = fixtures.appendingPathComponent("tiny-pipeline").path

    @Test func editInvertInterpolate() throws {
        let dir = temporaryDirectory()
        var rng = RandomGenerator(seed: 1)
        let images = dir.appendingPathComponent("in.npy"), one = dir.appendingPathComponent("one.npy"), two = dir.appendingPathComponent("two.npy")
        let x = Tensor(shape: [2, 1, 8, 8], (0..<128).map { _ in rng.uniform() * 2 - 1 })
        try NPY.write(x, to: images)
        try NPY.write(x.slice(0..<1), to: one)
        try NPY.write(x.slice(1..<2), to: two)
        let out = dir.appendingPathComponent("out.npy")

        var r = try ddpm(["edit", "--model", tiny, "--image", images.path, "--strength", "0", "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        #expect(try NPY.readTensor(out).scalars == x.scalars, "strength 0 returns the input")
        r = try ddpm(["edit", "--model", tiny, "--image", images.path, "--strength", "0.5", "--sampler", "dpm++", "--steps", "10",
                      "--output", out.path])
        #expect(r.status == 0 && r.out.contains("5 of 10 dpm++ steps"), "\(r.out) \(r.err)")
        #expect(try NPY.readTensor(out).shape == [2, 1, 8, 8])

        let noise = dir.appendingPathComponent("noise.npy")
        r = try ddpm(["invert", "--model", tiny, "--image", images.path, "--steps", "10", "--output", noise.path])
        #expect(r.status == 0, "\(r.err)")
        r = try ddpm(["sample", "--model", tiny, "--noise", noise.path, "--sampler", "ddim", "--steps", "10", "--no-clip-sample", "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        #expect(try NPY.readTensor(out).shape == [2, 1, 8, 8])

        r = try ddpm(["interpolate", "--model", tiny, "--image", one.path, "--image", two.path, "--frames", "5", "--steps", "10",
                      "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        #expect(try NPY.readTensor(out).shape == [5, 1, 8, 8])

        // bad input: clear errors, nothing written
        let fresh = dir.appendingPathComponent("fresh.png").path
        r = try ddpm(["edit", "--model", tiny, "--image", images.path, "--strength", "1.5", "--output", fresh])
        #expect(r.status != 0 && r.err.contains("--strength must lie in [0, 1]"), "\(r.err)")
        let broken = dir.appendingPathComponent("broken.png")
        try Data("not a png".utf8).write(to: broken)
        r = try ddpm(["edit", "--model", tiny, "--image", broken.path, "--strength", "0.5", "--output", fresh])
        #expect(r.status != 0 && r.err.contains(broken.path), "\(r.err)")
        try NPY.write(x * 3, to: images)
        r = try ddpm(["invert", "--model", tiny, "--image", images.path, "--output", dir.appendingPathComponent("n.npy").path])
        #expect(r.status != 0 && r.err.contains("is not in [-1, 1]"), "\(r.err)")
        r = try ddpm(["interpolate", "--model", tiny, "--image", one.path, "--output", fresh])
        #expect(r.status != 0 && r.err.contains("give --image twice"), "\(r.err)")
        let pair = dir.appendingPathComponent("pair.npy")
        try NPY.write(x, to: pair)
        r = try ddpm(["interpolate", "--model", tiny, "--image", pair.path, "--pick", "1,0", "--frames", "3", "--steps", "5", "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        r = try ddpm(["edit", "--model", tiny, "--image", pair.path, "--pick", "0,7", "--strength", "0", "--output", fresh])
        #expect(r.status != 0 && r.err.contains("--pick takes comma-separated indices below 2"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: fresh))
    }

    @Test func inpaintKeepsTheKnownPixels() throws {
        let dir = temporaryDirectory()
        var rng = RandomGenerator(seed: 2)
        let images = dir.appendingPathComponent("in.npy"), out = dir.appendingPathComponent("out.npy")
        let x = Tensor(shape: [2, 1, 8, 8], (0..<128).map { _ in rng.uniform() * 2 - 1 })
        try NPY.write(x, to: images)
        let mask = dir.appendingPathComponent("mask.png")
        try Image(width: 8, height: 8, channels: 1, pixels: (0..<64).map { $0 < 32 ? 255 : 0 }).writePNG(to: mask)
        var r = try ddpm(["inpaint", "--model", tiny, "--image", images.path, "--mask", mask.path, "--steps", "10", "--jump-length", "2",
                          "--jump-n-sample", "2", "--batch-size", "1", "--output", out.path])  // two batches of one
        #expect(r.status == 0 && r.out.contains("2 images inpainted"), "\(r.err)")
        let result = try NPY.readTensor(out)
        for i in 0..<result.count where i % 64 < 32 { #expect(result.pointer[i] == x.pointer[i]) }
        #expect((0..<result.count).contains { $0 % 64 >= 32 && result.pointer[$0] != x.pointer[$0] })

        let grey = dir.appendingPathComponent("grey.png"), small = dir.appendingPathComponent("small.png")
        try Image(width: 8, height: 8, channels: 1, pixels: Array(repeating: 128, count: 64)).writePNG(to: grey)
        try Image(width: 4, height: 4, channels: 1, pixels: Array(repeating: 255, count: 16)).writePNG(to: small)
        let fresh = dir.appendingPathComponent("fresh.npy").path
        r = try ddpm(["inpaint", "--model", tiny, "--image", images.path, "--mask", grey.path, "--output", fresh])
        #expect(r.status != 0 && r.err.contains(grey.path) && r.err.contains("not binary"), "\(r.err)")
        r = try ddpm(["inpaint", "--model", tiny, "--image", images.path, "--mask", small.path, "--output", fresh])
        #expect(r.status != 0 && r.err.contains("mask is 4x4"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: fresh))
    }
}
