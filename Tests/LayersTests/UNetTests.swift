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
