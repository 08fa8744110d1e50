import Diffusion
import Foundation
import Layers
import Testing
import Tensors
import TestSupport

/// A copy of the tiny reference pipeline in a temporary folder, to break on purpose.
func copyOfTinyPipeline() throws -> URL {
    let dir = temporaryDirectory().appendingPathComponent("model")
    try FileManager.default.copyItem(at: tiny, to: dir)
    return dir
}

@Suite struct PipelineTests {
    /// The whole deterministic DDIM loop (10 steps, eta 0) through the UNet, against diffusers.
    @Test func ddimLoopMatchesDiffusers() throws {
        let pipeline = try Pipeline.load(tiny)
        let scheduler = try pipeline.scheduler(.ddim, steps: 10)
        var loop = pipeline.denoise(try load("ddim_noise.npy"), with: scheduler, using: RandomGenerator(seed: 0))
        let out = loop.run()
        let expected = try load("ddim_output.npy")
        #expect(maxAbsDifference(out, expected) < 1e-3, "max difference \(maxAbsDifference(out, expected))")
    }

    /// Streaming from fresh noise (each batch's noise drawn when it starts, each batch handed on and
    /// dropped) gives the images of drawing all the noise first, with DDPM's own draws after it: an
    /// uneven last batch, in order, bit for bit.
    @Test func streamedGenerationEqualsAllAtOnce() throws {
        let pipeline = try Pipeline.load(tiny)
        let scheduler = try pipeline.scheduler(.ddpm, steps: 4)
        var rng = RandomGenerator(seed: 3)
        let expected = pipeline.generate(from: Tensor.randomNormal(pipeline.sampleShape(count: 7), using: &rng), with: scheduler,
                                         batchSize: 3, using: &rng)
        var streamed = RandomGenerator(seed: 3), parts: [Tensor] = [], ranges: [Range<Int>] = []
        pipeline.generate(count: 7, with: scheduler, batchSize: 3, using: &streamed) { range, images in
            ranges.append(range)
            parts.append(images)
        }
        #expect(ranges == [0..<3, 3..<6, 6..<7])
        #expect(maxAbsDifference(Tensor.joined(parts), expected) == 0)
        #expect(streamed == rng)
    }

    @Test func denoisingYieldsEveryStep() throws {
        let pipeline = try Pipeline.load(tiny)
        let scheduler = try pipeline.scheduler(.ddpm, steps: 25)
        let steps = Array(pipeline.denoise(Tensor(zeros: pipeline.sampleShape(count: 2)), with: scheduler, using: RandomGenerator(seed: 1)))
        #expect(steps.count == 25 && steps.map(\.timestep) == scheduler.timesteps)
        #expect(steps.last!.sample.scalars.allSatisfy { $0.isFinite })
    }

    @Test func saveAndLoadRoundTrip() throws {
        let pipeline = try Pipeline.load(tiny)
        let dir = temporaryDirectory().appendingPathComponent("saved")
        try pipeline.save(to: dir)
        let back = try Pipeline.load(dir)
        #expect(back.unet.config == pipeline.unet.config)
        #expect(back.schedulerConfig == pipeline.schedulerConfig)
        for ((n1, t1), (n2, t2)) in zip(pipeline.unet.parameters, back.unet.parameters) {
            #expect(n1 == n2 && t1.scalars == t2.scalars)
        }
        // a bare unet folder loads with a default DDPM scheduler
        let bare = try Pipeline.load(dir.appendingPathComponent("unet"))
        #expect(bare.schedulerConfig == SchedulerConfig())
    }

    /// The original DDPM model's exact config (google/ddpm-cifar10-32): built with random weights,
    /// saved, loaded, and run; the loaded model reproduces the saved one's output.
    @Test func cifar10ConfigSavesLoadsAndRuns() throws {
        var rng = RandomGenerator(seed: 3)
        let unet = UNet2DModel(config: .cifar10, using: &rng)
        #expect(unet.parameterCount == 35_746_307)
        var scheduler = SchedulerConfig()
        scheduler.varianceType = .fixedLarge
        let dir = temporaryDirectory().appendingPathComponent("cifar10")
        try Pipeline(unet: unet, schedulerConfig: scheduler).save(to: dir)
        let loaded = try Pipeline.load(dir)
        let config = loaded.unet.config
        #expect(!config.flipSinToCos && config.freqShift == 1 && config.downsamplePadding == 0)
        #expect(config.normEps == 1e-6 && config.attentionHeadDim == nil && loaded.schedulerConfig.varianceType == .fixedLarge)
        let x = Tensor.randomNormal([1, 3, 32, 32], using: &rng)
        let a = withoutGradients { unet(x, timesteps: [500]) }, b = withoutGradients { loaded.unet(x, timesteps: [500]) }
        #expect(a.shape == [1, 3, 32, 32] && a.scalars.allSatisfy { $0.isFinite })
        #expect(maxAbsDifference(a, b) == 0)
    }

    /// Checkpoints converted in 2022 name attention weights query/key/value/proj_attn, as 1x1 convs.
    @Test func legacyAttentionNamesLoad() throws {
        let dir = try copyOfTinyPipeline()
        let file = dir.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        var tensors = try Safetensors.read(file).tensors
        let renames = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        for name in tensors.keys where name.contains(".attentions.") {
            for (modern, legacy) in renames where name.contains(".\(modern).") {
                let t = tensors.removeValue(forKey: name)!
                tensors[name.replacingOccurrences(of: ".\(modern).", with: ".\(legacy).")] =
                    t.rank == 2 ? t.reshaped([t.shape[0], t.shape[1], 1, 1]) : t
            }
        }
        #expect(tensors.keys.contains("mid_block.attentions.0.proj_attn.weight"))
        try Safetensors.write(tensors, to: file)
        let pipeline = try Pipeline.load(dir)
        let x = try load("forward_input.npy")
        let out = withoutGradients { pipeline.unet(x, timesteps: [10, 500]) }
        #expect(maxAbsDifference(out, try load("forward_output.npy")) < 1e-4)
    }

    @Test func brokenFoldersGiveClearErrors() throws {
        func expectError(_ breakIt: (URL) throws -> Void, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let dir = try copyOfTinyPipeline()
            try breakIt(dir)
            do {
                _ = try Pipeline.load(dir)
                Issue.record("loaded a broken folder (\(message))", sourceLocation: sourceLocation)
            } catch {
                #expect("\(error)".contains(message), "\(error)", sourceLocation: sourceLocation)
            }
        }
        let weights = "unet/diffusion_pytorch_model.safetensors"
        func rewrite(_ dir: URL, _ path: String, _ transform: (Data) -> Data) throws {
            let url = dir.appendingPathComponent(path)
            try transform(try Data(contentsOf: url)).write(to: url)
        }
        func editTensors(_ dir: URL, _ edit: (inout [String: Tensor]) -> Void) throws {
            let url = dir.appendingPathComponent(weights)
            var t = try Safetensors.read(url).tensors
            edit(&t)
            try Safetensors.write(t, to: url)
        }
        try expectError({ try rewrite($0, weights) { $0.prefix($0.count - 100) } }, "out of range")
        try expectError({ try rewrite($0, weights) { var d = $0; d.replaceSubrange(8..<9, with: [UInt8(ascii: "#")]); return d } }, "not a JSON object")
        try expectError({ try editTensors($0) { $0["conv_in.bias"] = nil } }, "'conv_in.bias' (shape [8]) is missing")
        try expectError({ try editTensors($0) { $0["conv_in.bias"] = Tensor(zeros: [9]) } }, "'conv_in.bias' has shape [9]")
        try expectError({ try editTensors($0) { $0["extra.weight"] = Tensor(zeros: [1]) } }, "'extra.weight' is not a parameter")
        try expectError({ try rewrite($0, weights) { d in
            var d = d  // same length, so every offset stays valid
            while let r = d.range(of: Data("\"F32\"".utf8)) { d.replaceSubrange(r, with: Data("\"I64\"".utf8)) }
            return d
        } }, "unsupported dtype I64")
        try expectError({ try "{ not json".write(to: $0.appendingPathComponent("unet/config.json"), atomically: true, encoding: .utf8) }, "config.json: is not a JSON object")
        try expectError({ try rewrite($0, "unet/config.json") { Data(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "\"norm_num_groups\": 4", with: "\"norm_num_groups\": 3").utf8) } }, "'norm_num_groups' 3 does not divide")
        try expectError({ try rewrite($0, "unet/config.json") { Data(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "\"AttnDownBlock2D\"", with: "\"CrossAttnDownBlock2D\"").utf8) } }, "'CrossAttnDownBlock2D' is not supported")
        try expectError({ try rewrite($0, "scheduler/scheduler_config.json") { Data(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "\"linear\"", with: "\"wavy\"").utf8) } }, "'beta_schedule' 'wavy' is not supported")
        try expectError({ try FileManager.default.removeItem(at: $0.appendingPathComponent("unet")) }, "the unet folder is missing")
        try expectError({ dir in
            try FileManager.default.moveItem(at: dir.appendingPathComponent(weights), to: dir.appendingPathComponent("unet/diffusion_pytorch_model.bin"))
        }, "pickled PyTorch weights")
    }
}
