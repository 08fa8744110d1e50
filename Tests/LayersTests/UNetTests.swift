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
        let out = withoutGradients { unet(x, timesteps: t) }
        #expect(out.shape == expected.shape)
        #expect(maxAbsDifference(out, expected) < 1e-4, "max difference \(maxAbsDifference(out, expected))")
    }
}
