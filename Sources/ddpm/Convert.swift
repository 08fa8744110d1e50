import ArgumentParser
import Diffusion
import Foundation
import Tensors

/// Rewrites a model folder: a bare unet folder into a pipeline, a training run into a plain
/// pipeline (EMA weights only), float32 into float16.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a model folder as a clean diffusers pipeline, optionally with float16 weights or another scheduler.",
        discussion: """
            --scheduler writes the folder's scheduler config as another diffusers class (ddpm, ddim, dpm++, \
            euler, euler-a, heun), carrying its keys over as diffusers' from_config does; ddpm sample then \
            uses that sampler by default, and so does diffusers' pipeline.
            """)

    @Option(help: "Model folder to read.") var model: String
    @Option(help: "Folder to write.") var output: String
    @Flag(help: "Store the weights as float16 (half the size).") var float16 = false
    @Option(help: "Write the scheduler as this sampler's class: ddpm, ddim, dpm++, euler, euler-a or heun.")
    var scheduler: Pipeline.SamplerKind?

    func run() throws {
        let pipeline = try Pipeline.load(URL(fileURLWithPath: model))
        if let scheduler { pipeline.schedulerConfig = try pipeline.schedulerConfig.converted(to: scheduler.className) }
        try pipeline.save(to: URL(fileURLWithPath: output), dtype: float16 ? .f16 : .f32)
        print("wrote \(output): \(pipeline.unet.parameterCount) parameters as \(float16 ? "float16" : "float32"), "
              + "scheduler \(pipeline.schedulerConfig.className)")
    }
}
