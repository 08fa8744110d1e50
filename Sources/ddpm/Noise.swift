import ArgumentParser
import Datasets
import Diffusion
import Foundation
import Tensors

/// The forward process made visible: one image at several timesteps, side by side.
struct Noise: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the forward process: an image dissolving into noise at chosen timesteps.",
        discussion: "Writes a strip of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one tile per timestep, with the same eps throughout.")

    @Option(help: "Input PNG (grey or RGB).") var image: String
    @Option(help: "Comma-separated timesteps, 0-based.") var timesteps = "0,50,100,250,500,999"
    @Option(help: "Output PNG.") var output = "noise.png"
    @Option(help: "Beta schedule: linear, scaled_linear or squaredcos_cap_v2.") var betaSchedule = "linear"
    @Option(help: "A scheduler_config.json to take the schedule from (overrides --beta-schedule).") var config: String?
    @Option(help: "Random seed of the noise.") var seed: UInt64 = 0

    func run() throws {
        var schedulerConfig = SchedulerConfig()
        if let config {
            schedulerConfig = try SchedulerConfig.load(URL(fileURLWithPath: config))
        } else {
            guard let s = SchedulerConfig.BetaSchedule(rawValue: betaSchedule) else {
                throw ValidationError("unknown --beta-schedule '\(betaSchedule)' (linear, scaled_linear, squaredcos_cap_v2)")
            }
            schedulerConfig.betaSchedule = s
        }
        let schedule = NoiseSchedule(schedulerConfig)
        let steps = try timesteps.split(separator: ",").map { part -> Int in
            guard let t = Int(part.trimmingCharacters(in: .whitespaces)), t >= 0, t < schedule.count else {
                throw ValidationError("timestep '\(part)' is not an integer in 0..<\(schedule.count)")
            }
            return t
        }
        let x0 = try Image.readPNG(URL(fileURLWithPath: image)).tensor()
        var rng = RandomGenerator(seed: seed)
        let noise = Tensor.randomNormal(x0.shape, using: &rng)
        let strip = Tensor.joined(steps.map { schedule.addNoise(x0, noise: noise, timesteps: [$0]) })
        try imageGrid(strip, columns: steps.count).writePNG(to: URL(fileURLWithPath: output))
        print("wrote \(output): timesteps \(steps.map(String.init).joined(separator: ", ")), abar from \(schedule.alphasCumprod[steps.first!]) to \(schedule.alphasCumprod[steps.last!])")
    }
}
