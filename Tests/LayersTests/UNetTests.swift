import Foundation
import Layers
import Testing
import Tensors
import TestSupport

@Suite struct UNetTests {
    let tinyPipeline = fixtures.appendingPathComponent("tiny-pipeline")

    @Test(arguments: [(UNetConfig.Preset.fmnist, 3_691_713), (.cifar10, 35_746_307)])
    func presetParameterCounts(preset: UNetConfig.Preset, expected: Int) {
        var rng = RandomGenerator(seed: 0)
        #expect(UNet2DModel(config: preset.config, using: &rng).parameterCount == expected)
        #expect(preset.config.parameters == Double(expected))
    }

    /// A profiler is charged by the ops of the task that installed it only: a convolution run on
    /// another thread meanwhile (as tests run in parallel) is not counted.
    @Test func profilerCountsItsOwnTaskOnly() {
        let x = Tensor(zeros: [1, 2, 5, 5]), w = Tensor(zeros: [3, 2, 3, 3])
        let profiler = Profiler()
        Profiler.$current.withValue(profiler) {
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                _ = x.conv2d(weight: w, bias: nil, padding: 1)
                done.signal()
            }
            done.wait()
            _ = x.conv2d(weight: w, bias: nil, padding: 1)
        }
        #expect(profiler.convolutions.values.reduce(0, +) == 1)
        #expect(profiler.forward["conv3x3"]?.calls == 1)
    }

    /// A profiler lists the convolutions a pass runs (what `ddpm bench --ops --only conv --preset`
    /// times): as many calls and FLOPs as it charged to the conv ops, conv_in's geometry among them.
    @Test func profilerListsConvolutions() {
        var rng = RandomGenerator(seed: 0)
        let config = UNetConfig.Preset.tiny.config
        let unet = UNet2DModel(config: config, using: &rng)
        let x = Tensor.randomNormal([3, config.inChannels, config.sampleSize, config.sampleSize], using: &rng)
        let profiler = Profiler()
        Profiler.$current.withValue(profiler) { _ = withoutGradients { unet(x, timesteps: [1, 500, 999]) } }
        let convOps = profiler.forward.filter { $0.key.hasPrefix("conv") }.values
        #expect(profiler.convolutions.values.reduce(0, +) == convOps.reduce(0) { $0 + $1.calls })
        #expect(profiler.convolutions.reduce(0) { $0 + Double($1.value) * $1.key.flops } == convOps.reduce(0) { $0 + $1.flops })
        let convIn = ConvGeometry(batch: 3, channels: config.inChannels, height: config.sampleSize, width: config.sampleSize,
                                  outChannels: config.blockOutChannels[0], kernel: 3, stride: 1, padding: 1)
        #expect(profiler.convolutions[convIn] == 1)
    }

    /// The count a config promises before anything is built equals the built model's, for every
    /// preset and fixture (class tables, class MLPs, no attention in the mid block, odd groups).
    @Test func parametersWithoutBuilding() throws {
        var configs = UNetConfig.Preset.allCases.map(\.config)
        for name in ["tiny-pipeline", "tiny-class-table", "tiny-class-timestep"] {
            configs.append(try UNetConfig.load(fixtures.appendingPathComponent("\(name)/unet/config.json")))
        }
        var plain = UNetConfig.Preset.tiny.config
        plain.addAttention = false
        plain.layersPerBlock = 3
        configs.append(plain)
        for config in configs {
            var rng = RandomGenerator(seed: 0)
            #expect(config.parameters == Double(UNet2DModel(config: config, using: &rng).parameterCount))
        }
    }

    /// Block lists too long to halve the sample size that often are refused (2^99 once shifted to 0
    /// and divided by it).
    @Test func tooManyBlocksAreRefused() throws {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: tinyPipeline.appendingPathComponent("unet/config.json"))) as! [String: Any]
        json["block_out_channels"] = Array(repeating: 8, count: 100)
        json["down_block_types"] = Array(repeating: "DownBlock2D", count: 100)
        json["up_block_types"] = Array(repeating: "UpBlock2D", count: 100)
        let data = try JSONSerialization.data(withJSONObject: json)
        #expect(throws: ConfigError.self) { try UNetConfig(json: data, source: URL(fileURLWithPath: "deep.json")) }
    }

    /// A config that cannot fit in memory is refused by validation, with the size it needs, before
    /// a byte of it is allocated.
    @Test(arguments: [("sample_size", 100_000, "sample_size"), ("block_out_channels", 2_000_000, "block_out_channels")])
    func oversizeConfigsAreRefused(key: String, value: Int, named: String) throws {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: tinyPipeline.appendingPathComponent("unet/config.json"))) as! [String: Any]
        json[key] = key == "sample_size" ? value as Any : [value, value] as Any
        if key == "block_out_channels" { json["norm_num_groups"] = 1; json["attention_head_dim"] = 1 }
        let data = try JSONSerialization.data(withJSONObject: json)
        #expect {
            try UNetConfig(json: data, source: URL(fileURLWithPath: "big.json")).validate(source: URL(fileURLWithPath: "big.json"))
        } throws: { error in
            let message = "\(error)"
            return message.contains(named) && message.contains("needs at least") && message.contains("GB") && message.contains("big.json")
        }
    }

    /// Builds the tiny reference model from its config, loads diffusers' weights strictly (every
    /// name and shape must match), and reproduces diffusers' forward pass.
    @Test func forwardMatchesDiffusers() throws {
        let config = try UNetConfig.load(tinyPipeline.appendingPathComponent("unet/config.json"))
        var rng = RandomGenerator(seed: 0)
        let unet = UNet2DModel(config: config, using: &rng)
        let file = tinyPipeline.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        try unet.load(Safetensors.read(file).tensors, from: file)
        let x = try NPY.readTensor(tinyPipeline.appendingPathComponent("forward_input.npy"))
        let t = try NPY.read(tinyPipeline.appendingPathComponent("forward_timesteps.npy")).values.map { Float($0) }
        let expected = try NPY.readTensor(tinyPipeline.appendingPathComponent("forward_output.npy"))
        // the gradient-free path (fused attention) and the recorded one (layer by layer)
        for out in [withoutGradients { unet(x, timesteps: t) }, unet(x, timesteps: t)] {
            #expect(out.shape == expected.shape)
            #expect(maxAbsDifference(out, expected) < 1e-4, "max difference \(maxAbsDifference(out, expected))")
        }
    }

    /// The sampling path (attention from one q/k/v product with no transposes, prepared weights
    /// kept across calls) computes what the recorded path does, on the fmnist preset, whose
    /// 64- and 128-channel layers take Winograd at batch 3 and the direct kernel at batch 1.
    @Test(arguments: [1, 3])
    func samplingPathMatchesRecordedPath(batch: Int) {
        var rng = RandomGenerator(seed: 1)
        let unet = UNet2DModel(config: UNetConfig.Preset.fmnist.config, using: &rng)
        let x = Tensor.randomNormal([batch, 1, 28, 28], using: &rng)
        let t = (0..<batch).map { Float(100 + 300 * $0) }
        let recorded = unet(x, timesteps: t)
        let cache = FrozenWeights()
        for _ in 0..<2 {
            let lean = withFrozenWeights(cache) { withoutGradients { unet(x, timesteps: t) } }
            #expect(maxAbsDifference(lean, recorded) < 1e-4, "max difference \(maxAbsDifference(lean, recorded))")
        }
    }
}
