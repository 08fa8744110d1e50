import Foundation
import Testing
import Tensors
import TestSupport

/// What protects hours of training and what users hand us: values checked on load, a lock on the
/// training folder, checkpoints that survive a failed save or an interrupted one.
@Suite struct ReliabilityTests {
    let tiny = fixtures.appendingPathComponent("tiny-pipeline")

    func data(in dir: URL) throws -> String {
        var rng = RandomGenerator(seed: 9)
        let url = dir.appendingPathComponent("x.npy")
        try NPY.encode(shape: [8, 1, 28, 28], float32: (0..<(8 * 784)).map { _ in rng.uniform() * 2 - 1 }).write(to: url)
        return url.path
    }

    func train(_ data: String, _ output: String, steps: Int, resume: Bool = false, limitKB: Int? = nil) throws -> (status: Int32, out: String, err: String) {
        var arguments = ["train", "--data", data, "--batch-size", "4", "--sample-every", "0", "--checkpoint-every", "1",
                         "--steps", String(steps), "--output", output]
        arguments += resume ? ["--resume"] : ["--preset", "tiny"]
        guard let limitKB else { return try ddpm(arguments) }
        // a file-size limit stands in for a full disk
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "ulimit -f \(limitKB); exec \"$0\" \"$@\"", ddpmBinary.path] + arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, "", String(decoding: e, as: UTF8.self))
    }

    func expectSameCheckpoint(_ a: String, _ b: String) throws {
        for file in ["training/unet.safetensors", "training/ema.safetensors", "training/optimizer.safetensors", "unet/diffusion_pytorch_model.safetensors"] {
            let x = try Data(contentsOf: URL(fileURLWithPath: a).appendingPathComponent(file))
            let y = try Data(contentsOf: URL(fileURLWithPath: b).appendingPathComponent(file))
            #expect(x == y, "\(file) differs")
        }
    }

    @Test func failedAndInterruptedSavesLoseNothing() throws {
        let dir = temporaryDirectory()
        let x = try data(in: dir)
        let whole = dir.appendingPathComponent("whole").path
        #expect(try train(x, whole, steps: 4).status == 0)

        // a save that fails (the file-size limit) leaves the previous checkpoint and says so
        let full = dir.appendingPathComponent("full").path
        #expect(try train(x, full, steps: 2).status == 0)
        let failed = try train(x, full, steps: 4, resume: true, limitKB: 20)
        #expect(failed.status != 0 && failed.err.contains("could not be written") && failed.err.contains("the checkpoint of step 2 is intact"),
                "\(failed.err)")
        #expect(try train(x, full, steps: 4, resume: true).status == 0)
        try expectSameCheckpoint(whole, full)

        // a kill between the two renames of a save: training/ gone, the complete new one beside it
        let cut = dir.appendingPathComponent("cut")
        #expect(try train(x, cut.path, steps: 3).status == 0)
        let fm = FileManager.default
        try fm.moveItem(at: cut.appendingPathComponent("training"), to: cut.appendingPathComponent("training.partial"))
        #expect(try train(x, cut.path, steps: 4, resume: true).status == 0)
        try expectSameCheckpoint(whole, cut.path)
        // ... or the old one moved aside and the new one never finished
        let aside = dir.appendingPathComponent("aside")
        #expect(try train(x, aside.path, steps: 2).status == 0)
        try fm.moveItem(at: aside.appendingPathComponent("training"), to: aside.appendingPathComponent("training.old"))
        try fm.createDirectory(at: aside.appendingPathComponent("training.partial"), withIntermediateDirectories: true)
        try Data("half".utf8).write(to: aside.appendingPathComponent("training.partial/unet.safetensors"))
        #expect(try train(x, aside.path, steps: 4, resume: true).status == 0)
        try expectSameCheckpoint(whole, aside.path)
        #expect(!fm.fileExists(atPath: aside.appendingPathComponent("training.partial").path))
    }

    @Test func aSecondRunOnOneFolderRefuses() throws {
        let dir = temporaryDirectory()
        let x = try data(in: dir)
        let output = dir.appendingPathComponent("run")
        let first = Process()
        first.executableURL = ddpmBinary
        first.arguments = ["train", "--data", x, "--preset", "tiny", "--batch-size", "4", "--steps", "100000", "--sample-every", "0",
                           "--output", output.path]
        first.standardError = FileHandle.nullDevice  // a pipe nobody reads would fill and stall it
        first.standardOutput = FileHandle.nullDevice
        try first.run()
        // SIGKILL: a child started from a test thread may inherit a mask that blocks SIGTERM
        defer { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() }
        let lock = output.appendingPathComponent(".lock").path
        for _ in 0..<200 where (try? String(contentsOfFile: lock, encoding: .utf8))?.isEmpty ?? true { usleep(20_000) }
        let second = try ddpm(["train", "--data", x, "--resume", "--output", output.path])
        #expect(second.status != 0 && second.err.contains("is being trained by another ddpm train (process \(first.processIdentifier))"),
                "\(second.err)")
    }

    @Test func badValuesAreRefusedWithWhereTheyAre() throws {
        let dir = temporaryDirectory()
        let nan = dir.appendingPathComponent("nan.npy"), bytes = dir.appendingPathComponent("bytes.npy")
        var values = [Float](repeating: 0.5, count: 2 * 784)
        values[900] = .nan
        try NPY.encode(shape: [2, 1, 28, 28], float32: values).write(to: nan)
        try NPY.encode(shape: [2, 1, 28, 28], float32: [Float](repeating: 200, count: 2 * 784)).write(to: bytes)
        for (file, index) in [(nan, 900), (bytes, 0)] {
            let r = try ddpm(["train", "--data", file.path, "--preset", "tiny", "--steps", "1", "--batch-size", "2",
                              "--output", dir.appendingPathComponent("o\(index)").path])
            #expect(r.status != 0 && r.err.contains(file.path) && r.err.contains("at index \(index) is not in [-1, 1]"), "\(r.err)")
        }
        // a NaN in the weights
        let model = dir.appendingPathComponent("model")
        try FileManager.default.copyItem(at: tiny, to: model)
        let weights = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let tensors = try Safetensors.read(weights).tensors
        tensors["conv_in.weight"]!.pointer[3] = .infinity
        try Safetensors.write(tensors, to: weights)
        let r = try ddpm(["sample", "--model", model.path, "--count", "1", "--output", dir.appendingPathComponent("s.png").path])
        #expect(r.status != 0 && r.err.contains("'conv_in.weight' holds inf at index 3"), "\(r.err)")
    }
}
