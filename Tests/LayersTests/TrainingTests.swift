import Foundation
import Layers
import Testing
import Tensors
import TestSupport

@Suite struct TrainingTests {
    /// Regression of f(x, y) = sin(3x) cos(2y) on [-1, 1]^2 with AdamW: the loss must fall from
    /// about the target's variance (~0.12) to below 0.005.
    @Test func mlpLearnsToyFunction() {
        var rng = RandomGenerator(seed: 1)
        let net = MLP(widths: [2, 64, 64, 1], using: &rng)
        let optimizer = AdamW(parameters: net.parameterTensors, learningRate: 3e-3, weightDecay: 0)
        func batch(_ n: Int) -> (Tensor, Tensor) {
            let x = Tensor.randomUniform([n, 2], low: -1, high: 1, using: &rng)
            let y = (0..<n).map { Foundation.sin(3 * x.pointer[2 * $0]) * Foundation.cos(2 * x.pointer[2 * $0 + 1]) }
            return (x, Tensor(shape: [n, 1], y))
        }
        let (testX, testY) = batch(512)
        let initial = withoutGradients { meanSquaredError(net(testX), testY).item }
        for _ in 0..<1500 {
            let (x, y) = batch(64)
            net.zeroGradients()
            meanSquaredError(net(x), y).backward()
            clipGradientNorm(net.parameterTensors, maxNorm: 1)
            optimizer.update()
        }
        let final = withoutGradients { meanSquaredError(net(testX), testY).item }
        #expect(initial > 0.05)
        #expect(final < 0.005, "test loss \(initial) -> \(final)")
    }

    /// AdamW against the update rule computed independently in Double.
    @Test func adamWMatchesReference() {
        let p = Tensor(shape: [3], [0.5, -1.0, 2.0]).trainable()
        let optimizer = AdamW(parameters: [p], learningRate: 0.1, beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0.1)
        var ref = [0.5, -1.0, 2.0], m = [0.0, 0, 0], v = [0.0, 0, 0]
        for t in 1...4 {
            p.zeroGradient()
            (p * p * p).sum().backward()  // g = 3 p^2
            optimizer.update()
            for i in 0..<3 {
                let g = 3 * Double(Float(ref[i])) * Double(Float(ref[i]))
                ref[i] *= 1 - 0.1 * 0.1
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.99 * v[i] + 0.01 * g * g
                let mh = m[i] / (1 - pow(0.9, Double(t))), vh = v[i] / (1 - pow(0.99, Double(t)))
                ref[i] -= 0.1 * mh / (vh.squareRoot() + 1e-8)
            }
        }
        for i in 0..<3 { #expect(abs(Double(p.pointer[i]) - ref[i]) < 1e-5) }
    }

    /// A parameter with learning-rate scale k moves as it would under k times the learning rate.
    @Test func adamWLearningRateScales() {
        func run(_ lr: Float, scales: [Float]) -> [[Float]] {
            let ps = [Tensor(shape: [2], [0.5, -1.0]).trainable(), Tensor(shape: [2], [2.0, 0.25]).trainable()]
            let optimizer = AdamW(parameters: ps, learningRate: lr, weightDecay: 0.1)
            optimizer.learningRateScales = scales
            for _ in 0..<3 {
                ps.forEach { $0.zeroGradient() }
                (ps[0] * ps[0] * ps[0]).sum().backward(); (ps[1] * ps[1]).sum().backward()
                optimizer.update()
            }
            return ps.map(\.scalars)
        }
        let scaled = run(0.1, scales: [1, 3]), plain = run(0.1, scales: [1, 1]), triple = run(0.3, scales: [1, 1])
        #expect(scaled[0] == plain[0])
        for i in 0..<2 { #expect(abs(scaled[1][i] - triple[1][i]) < 1e-6 && abs(scaled[1][i] - plain[1][i]) > 0.1) }
        #expect(run(0.1, scales: [0, 1])[0] == [0.5, -1.0])
    }

    @Test func gradientClipping() {
        let a = Tensor(shape: [2], [1, 1]).trainable(), b = Tensor(shape: [1], [1]).trainable()
        ((a * Tensor(shape: [2], [3, 0])).sum() + (b * Tensor(shape: [1], [4])).sum()).backward()  // grads (3, 0), (4): norm 5
        let norm = clipGradientNorm([a, b], maxNorm: 1)
        #expect(abs(norm - 5) < 1e-5)
        #expect(abs(a.gradient!.pointer[0] - 0.6) < 1e-5 && abs(b.gradient!.pointer[0] - 0.8) < 1e-5)
        #expect(warmupLearningRate(base: 2e-4, step: 250, warmup: 1000) == 5e-5)
        #expect(warmupLearningRate(base: 2e-4, step: 5000, warmup: 1000) == 2e-4)
    }

    @Test func emaDecayAndUpdate() {
        let decay = ExponentialMovingAverage.Decay.warmup(maxDecay: 0.9999)
        #expect(decay.value(afterStep: 1) == 0)
        #expect(abs(decay.value(afterStep: 11) - Float(1 - pow(11.0, -0.75))) < 1e-6)
        #expect(decay.value(afterStep: 10_000_000) == 0.9999)
        let p = Tensor(shape: [2], [1, 2]).trainable()
        let ema = ExponentialMovingAverage(parameters: [p], decay: .constant(0.75))
        p.pointer[0] = 5
        ema.update(step: 1)
        #expect(ema.shadow[0].scalars == [2, 2])  // 1 - 0.25 (1 - 5)
    }

    @Test func strictLoading() throws {
        var rng = RandomGenerator(seed: 2)
        let net = MLP(widths: [2, 3], using: &rng)
        let file = URL(fileURLWithPath: "/models/m.safetensors")
        let tensors = net.stateDictionary.mapValues { $0.copy() }
        #expect(Set(tensors.keys) == ["layers.0.weight", "layers.0.bias"])
        tensors["layers.0.bias"]!.pointer[0] = 42
        try net.load(tensors, from: file)
        #expect(net.layers[0].bias!.pointer[0] == 42)
        var missing = tensors; missing["layers.0.bias"] = nil
        #expect(throws: LoadError.missing(file.path, "layers.0.bias", [3])) { try net.load(missing, from: file) }
        var extra = tensors; extra["layers.1.weight"] = Tensor(zeros: [1])
        #expect(throws: LoadError.unexpected(file.path, "layers.1.weight", count: 1)) { try net.load(extra, from: file) }
        var wrong = tensors; wrong["layers.0.weight"] = Tensor(zeros: [2, 3])
        #expect(throws: LoadError.shape(file.path, "layers.0.weight", expected: [3, 2], found: [2, 3])) { try net.load(wrong, from: file) }
    }
}
