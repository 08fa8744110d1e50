import Diffusion
import Foundation
import Testing
import Tensors
import TestSupport

/// The `ddpm` binary that `swift test` built beside the test bundle.
let ddpmBinary: URL = {
    let dir = Bundle.main.bundleURL.deletingLastPathComponent()
    let candidates = [dir.appendingPathComponent("ddpm"), dir.deletingLastPathComponent().appendingPathComponent("ddpm"),
                      Bundle.main.bundleURL.appendingPathComponent("ddpm")]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
}()

/// Runs ddpm with arguments (and variables added to the environment); returns exit status, stdout and stderr.
func ddpm(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = ddpmBinary
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite struct SampleCommandTests {
    let tiny = fixtures.appendingPathComponent("tiny-pipeline")

    /// `ddpm sample` streams a .npy batch by batch: the file equals the library's all-at-once
    /// generation for the same seed (an uneven last batch), no temporary is left behind, and a PNG
    /// grid past the limit is refused before any work, nothing written.
    @Test func samplesStreamToNPY() throws {
        let dir = temporaryDirectory()
        let out = dir.appendingPathComponent("many.npy")
        let r = try ddpm(["sample", "--model", tiny.path, "--sampler", "ddpm", "--steps", "3", "--count", "150", "--batch-size", "64",
                          "--seed", "5", "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        let pipeline = try Pipeline.load(tiny)
        var rng = RandomGenerator(seed: 5)
        let expected = pipeline.generate(from: Tensor.randomNormal(pipeline.sampleShape(count: 150), using: &rng),
                                         with: try pipeline.scheduler(.ddpm, steps: 3), batchSize: 64, using: &rng)
        #expect(maxAbsDifference(try NPY.readTensor(out), expected) < 1e-6)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["many.npy"])
        let png = dir.appendingPathComponent("huge.png")
        let refused = try ddpm(["sample", "--model", tiny.path, "--count", "5000", "--output", png.path])
        #expect(refused.status != 0 && refused.err.contains("--count 5000") && refused.err.contains(".npy"), "\(refused.err)")
        #expect(!FileManager.default.fileExists(atPath: png.path))
    }

    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: ddpmBinary.path), "no ddpm binary at \(ddpmBinary.path)")
    }

    /// The fast samplers through the command line from the fixtures' noise equal diffusers' loops;
    /// a folder converted to DPM-Solver++ samples with it by default (25 steps).
    @Test func fastSamplersThroughTheCommandLine() throws {
        let dir = temporaryDirectory()
        let loops = try Safetensors.read(fixtures.appendingPathComponent("fast-samplers/loops.safetensors")).tensors
        let noise = dir.appendingPathComponent("noise.npy")
        try NPY.write(loops["noise"]!, to: noise)
        func expectMatch(_ arguments: [String], _ key: String, model: String? = nil) throws {
            let out = dir.appendingPathComponent("out.npy")
            let r = try ddpm(["sample", "--model", model ?? tiny.path, "--noise", noise.path, "--output", out.path] + arguments)
            #expect(r.status == 0, "\(r.err)")
            let worst = zip(try NPY.readTensor(out).scalars, loops[key + "/sample"]!.scalars).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-3, "\(arguments): largest difference \(worst) from \(key)")
        }
        try expectMatch(["--sampler", "dpm++", "--steps", "10"], "dpm++_folder_10_plain_epsilon")
        try expectMatch(["--sampler", "euler", "--steps", "25", "--karras"], "euler_folder_25_karras_epsilon")
        try expectMatch(["--sampler", "heun", "--steps", "10"], "heun_folder_10_plain_epsilon")
        let converted = dir.appendingPathComponent("dpm").path
        let r = try ddpm(["convert", "--model", tiny.path, "--output", converted, "--scheduler", "dpm++"])
        #expect(r.status == 0 && r.out.contains("DPMSolverMultistepScheduler"), "\(r.err)")
        try expectMatch([], "dpm++_folder_25_plain_epsilon", model: converted)
        let bad = try ddpm(["sample", "--model", tiny.path, "--sampler", "ddim", "--karras", "--count", "1"])
        #expect(bad.status != 0 && bad.err.contains("--karras applies to"), "\(bad.err)")
    }

    /// `ddpm sample --sampler ddim --steps 10 --eta 0 --noise ddim_noise.npy --output out.npy` equals diffusers.
    @Test func ddimThroughTheCommandLineMatchesDiffusers() throws {
        let out = temporaryDirectory().appendingPathComponent("out.npy")
        let r = try ddpm(["sample", "--model", tiny.path, "--sampler", "ddim", "--steps", "10", "--eta", "0",
                          "--noise", tiny.appendingPathComponent("ddim_noise.npy").path, "--output", out.path])
        #expect(r.status == 0, "\(r.err)")
        let ours = try NPY.readTensor(out), expected = try NPY.readTensor(tiny.appendingPathComponent("ddim_output.npy"))
        #expect(ours.shape == expected.shape)
        #expect(maxAbsDifference(ours, expected) < 1e-3)
    }

    @Test func pngGridAndProgression() throws {
        let dir = temporaryDirectory()
        let r = try ddpm(["sample", "--model", tiny.path, "--count", "3", "--sampler", "ddim", "--steps", "5",
                          "--output", dir.appendingPathComponent("g.png").path, "--progression", dir.appendingPathComponent("p.png").path])
        #expect(r.status == 0, "\(r.err)")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("g.png").path))
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("p.png").path))
    }

    /// Broken inputs: status 1, a message naming the file and the problem, and no output written.
    @Test func brokenInputsFailCleanly() throws {
        let dir = temporaryDirectory()
        let badShape = dir.appendingPathComponent("shape.npy"), nan = dir.appendingPathComponent("nan.npy")
        try NPY.encode(shape: [2, 3, 8, 8], float32: Array(repeating: 0, count: 384)).write(to: badShape)
        var values = [Float](repeating: 0, count: 64)
        values[5] = .nan
        try NPY.encode(shape: [1, 1, 8, 8], float32: values).write(to: nan)
        let broken = try copyOfTinyPipeline()
        let weights = broken.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        try Data(contentsOf: weights).prefix(1000).write(to: weights)
        let cases: [([String], String)] = [
            (["--noise", badShape.path], "noise has shape [2, 3, 8, 8]"),
            (["--noise", nan.path], "non-finite"),
            (["--noise", dir.appendingPathComponent("missing.npy").path], "cannot read"),
            (["--model", broken.path], "diffusion_pytorch_model.safetensors"),
            (["--model", dir.appendingPathComponent("nothing").path], "not a model folder"),
        ]
        for (arguments, message) in cases {
            let output = dir.appendingPathComponent("out-\(UUID().uuidString).png")
            let args = ["sample", "--model", tiny.path, "--output", output.path] + arguments
            let r = try ddpm(args)
            #expect(r.status == 1, "\(arguments): status \(r.status)")
            #expect(r.err.contains(message), "\(arguments): \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: output.path))
        }
    }
}

/// Copy of the tiny pipeline to break.
func copyOfTinyPipeline() throws -> URL {
    let dir = temporaryDirectory().appendingPathComponent("model")
    try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tiny-pipeline"), to: dir)
    return dir
}
