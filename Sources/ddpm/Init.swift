import ArgumentParser
import Diffusion
import Foundation
import Layers
import Tensors

extension UNetConfig.Preset: ExpressibleByArgument {}

/// Writes an untrained model folder: a starting point for training, or a stand-in for timing.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a randomly initialised model folder (diffusers DDPMPipeline layout) for a preset.")

    @Option(help: "Model size: tiny, fmnist or cifar10.") var preset: UNetConfig.Preset
    @Option(help: "Output folder.") var output: String
    @Option(help: "Random seed of the initial weights.") var seed: UInt64 = 0

    func run() throws {
        var rng = RandomGenerator(seed: seed)
        let unet = UNet2DModel(config: preset.config, using: &rng)
        var scheduler = SchedulerConfig()
        if preset == .cifar10 { scheduler.varianceType = .fixedLarge }  // as google/ddpm-cifar10-32
        try Pipeline(unet: unet, schedulerConfig: scheduler).save(to: URL(fileURLWithPath: output))
        print("wrote \(output): \(preset.rawValue), \(unet.parameterCount) parameters, untrained")
    }
}
