import ArgumentParser

@main
struct DDPM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ddpm",
        abstract: "Denoising diffusion probabilistic models in Swift.",
        version: "0.1.0",
        subcommands: [Sample.self, Edit.self, Inpaint.self, Invert.self, Interpolate.self, Train.self, Evaluate.self, ClassifierCommand.self, Noise.self, Init.self, Convert.self, Demo.self, Bench.self, Info.self])
}
