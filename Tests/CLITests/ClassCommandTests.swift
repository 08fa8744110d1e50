import Foundation
import Testing
import Tensors
import TestSupport

/// `ddpm train --class-conditional` and `ddpm sample --class` end to end on a small labelled `.npy`.
@Suite struct ClassCommandTests {
    func labelledData(in dir: URL) throws -> (images: String, labels: String) {
        var rng = RandomGenerator(seed: 4)
        let images = dir.appendingPathComponent("x.npy"), labels = dir.appendingPathComponent("y.npy")
        try NPY.encode(shape: [8, 1, 28, 28], float32: (0..<(8 * 784)).map { _ in rng.uniform() * 2 - 1 }).write(to: images)
        try NPY.encode(shape: [8], int64: [0, 1, 2, 0, 1, 2, 0, 1]).write(to: labels)
        return (images.path, labels.path)
    }

    @Test func trainResumeAndSampleByClass() throws {
        let dir = temporaryDirectory()
        let (images, labels) = try labelledData(in: dir)
        let common = ["train", "--data", images, "--labels", labels, "--preset", "tiny", "--batch-size", "4",
                      "--sample-every", "0", "--checkpoint-every", "2"]
        let whole = dir.appendingPathComponent("whole").path, parts = dir.appendingPathComponent("parts").path
        var r = try ddpm(common + ["--class-conditional", "--steps", "4", "--output", whole])
        #expect(r.status == 0, "\(r.err)")
        r = try ddpm(common + ["--class-conditional", "--steps", "2", "--output", parts])
        #expect(r.status == 0, "\(r.err)")
        r = try ddpm(["train", "--data", images, "--labels", labels, "--resume", "--steps", "4", "--output", parts, "--sample-every", "0"])
        #expect(r.status == 0, "\(r.err)")
        for file in ["unet/diffusion_pytorch_model.safetensors", "training/optimizer.safetensors", "model_index.json"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: whole).appendingPathComponent(file))
            let b = try Data(contentsOf: URL(fileURLWithPath: parts).appendingPathComponent(file))
            #expect(a == b, "\(file) differs after a resume")
        }
        let index = try String(contentsOf: URL(fileURLWithPath: whole).appendingPathComponent("model_index.json"), encoding: .utf8)
        #expect(index.contains("\"id2label\"") && index.contains("\"2\" : \"2\""), "\(index)")

        let out = dir.appendingPathComponent("s.npy").path
        r = try ddpm(["sample", "--model", whole, "--class", "1", "--guidance-scale", "2", "--count", "3",
                      "--sampler", "ddim", "--steps", "3", "--output", out])
        #expect(r.status == 0 && !r.err.contains("warning"), "\(r.err)")
        #expect(try NPY.readTensor(URL(fileURLWithPath: out)).shape == [3, 1, 28, 28])
        // a conditional folder is written without x_0 clipping; asking for it beside guidance is warned about
        r = try ddpm(["sample", "--model", whole, "--class", "1", "--guidance-scale", "2", "--count", "1",
                      "--sampler", "ddim", "--steps", "2", "--clip-sample", "--output", out])
        #expect(r.status == 0 && r.err.contains("pass --no-clip-sample"), "\(r.err)")
        for bad in ["7", "dog"] {
            r = try ddpm(["sample", "--model", whole, "--class", bad, "--count", "1", "--output", out])
            #expect(r.status != 0 && r.err.contains("its classes are 0 0, 1 1, 2 2"), "\(r.err)")
        }
        // labels missing for a conditional run are an error
        r = try ddpm(["train", "--data", images, "--preset", "tiny", "--class-conditional", "--steps", "1",
                      "--output", dir.appendingPathComponent("nolabels").path])
        #expect(r.status != 0 && r.err.contains("no class labels"), "\(r.err)")
    }

    /// `--init-from` an unconditional model adds a zero class table; `--lr-scale class_embedding=0`
    /// holds that table (and only it) still, which shows the factor reaches the parameter it names.
    @Test func warmStartWithALearningRateScale() throws {
        let dir = temporaryDirectory()
        let (images, labels) = try labelledData(in: dir)
        let base = dir.appendingPathComponent("base").path, warm = dir.appendingPathComponent("warm").path
        let common = ["train", "--data", images, "--labels", labels, "--batch-size", "4", "--sample-every", "0", "--steps", "2"]
        var r = try ddpm(common + ["--preset", "tiny", "--output", base])
        #expect(r.status == 0, "\(r.err)")
        r = try ddpm(common + ["--init-from", base, "--class-conditional", "--lr-scale", "class_embedding=0", "--output", warm])
        #expect(r.status == 0, "\(r.err)")
        let before = try Safetensors.read(URL(fileURLWithPath: base).appendingPathComponent("training/unet.safetensors")).tensors
        let after = try Safetensors.read(URL(fileURLWithPath: warm).appendingPathComponent("training/unet.safetensors")).tensors
        #expect(after["class_embedding.weight"]?.scalars.allSatisfy { $0 == 0 } == true)
        #expect(after["conv_in.weight"]?.scalars != before["conv_in.weight"]?.scalars, "the other weights trained")
        func scheduler(_ folder: String) throws -> String {
            try String(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("scheduler/scheduler_config.json"), encoding: .utf8)
        }
        #expect(try scheduler(base).contains("\"clip_sample\" : true") && scheduler(warm).contains("\"clip_sample\" : false"),
                "a model meant to be guided is written without DDIM's x_0 clipping")
        // an unconditional model refuses --class
        r = try ddpm(["sample", "--model", base, "--class", "1", "--count", "1", "--output", dir.appendingPathComponent("s.npy").path])
        #expect(r.status != 0 && r.err.contains("need a class-conditional model"), "\(r.err)")
        r = try ddpm(common + ["--init-from", base, "--class-conditional", "--lr-scale", "class_embeding=10",
                               "--output", dir.appendingPathComponent("typo").path])
        #expect(r.status != 0 && r.err.contains("--lr-scale class_embeding: no parameter") && r.err.contains("class_embedding"), "\(r.err)")
        r = try ddpm(common + ["--lr-scale", "conv_in", "--output", dir.appendingPathComponent("bad").path])
        #expect(r.status != 0 && r.err.contains("PREFIX=K"), "\(r.err)")
    }
}
