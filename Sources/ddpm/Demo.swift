import ArgumentParser
import Foundation
import Layers
import Tensors

/// Trains a small network on a 2-D toy problem and prints the loss falling: the engine end to end.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a small MLP on f(x, y) = sin(3x) cos(2y) and print the loss (an engine smoke run).")

    @Option(help: "Optimiser steps.") var steps = 2000
    @Option(help: "Random seed.") var seed: UInt64 = 0

    func run() throws {
        var rng = RandomGenerator(seed: seed)
        let net = MLP(widths: [2, 64, 64, 1], using: &rng)
        let optimizer = AdamW(parameters: net.parameterTensors, learningRate: 3e-3, weightDecay: 0)
        print("MLP 2-64-64-1, \(net.parameterCount) parameters, AdamW lr 3e-3, batch 64")
        let start = Date()
        for step in 1...steps {
            let x = Tensor.randomUniform([64, 2], low: -1, high: 1, using: &rng)
            let y = Tensor(shape: [64, 1], (0..<64).map { sin(3 * x.pointer[2 * $0]) * cos(2 * x.pointer[2 * $0 + 1]) })
            net.zeroGradients()
            let loss = meanSquaredError(net(x), y)
            loss.backward()
            optimizer.update()
            if step == 1 || step % (steps / 10) == 0 {
                print(String(format: "step %5d  loss %.5f", step, loss.item))
            }
        }
        print(String(format: "%d steps in %.2f s", steps, Date().timeIntervalSince(start)))
    }
}
