import Foundation
import Testing
import Tensors
import TestSupport

/// Every differentiable op against central finite differences, at odd sizes and batch > 1.
@Suite struct GradientTests {
    func expectGradients(_ inputs: [Tensor], h: Float = 1e-2, rtol: Float = 1e-2, atol: Float = 1e-3,
                         _ f: @escaping ([Tensor]) -> Tensor, sourceLocation: SourceLocation = #_sourceLocation) {
        let problems = gradientMismatches(inputs, h: h, rtol: rtol, atol: atol, f)
        #expect(problems.isEmpty, "\(problems.prefix(5).joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    @Test(arguments: [
        ([2, 3, 5], [2, 3, 5]), ([2, 3, 5], [5]), ([2, 3, 4, 5], [2, 3, 1, 1]), ([3, 1, 5], [3, 4, 1]),
        ([4, 3], [1, 3]), ([2, 3, 5], [1]),
    ])
    func broadcastArithmetic(shapes: ([Int], [Int])) {
        let a = randomTensor(shapes.0, seed: 1), b = randomTensor(shapes.1, seed: 2)
        expectGradients([a, b]) { $0[0] + $0[1] }
        expectGradients([a, b]) { $0[0] - $0[1] }
        expectGradients([a, b]) { $0[0] * $0[1] }
        expectGradients([b, a]) { $0[0] - $0[1] }
    }

    @Test func scalarOps() {
        let a = randomTensor([3, 7], seed: 3)
        expectGradients([a]) { ($0[0] * 1.7 + 0.3) / 2 - 1 }
        expectGradients([a]) { -$0[0] }
    }

    @Test(arguments: [[5], [3, 11], [2, 3, 9]])
    func silu(shape: [Int]) {
        expectGradients([randomTensor(shape, seed: 4, scale: 2)]) { $0[0].silu() }
    }

    @Test func softmax() {
        expectGradients([randomTensor([2, 3, 7], seed: 5)]) { $0[0].softmax() }
    }

    /// The classifier's ops: global average pooling, and cross-entropy (also its value, against a
    /// direct computation).
    @Test func classificationOps() {
        expectGradients([randomTensor([2, 3, 4, 5], seed: 21)]) { $0[0].spatialMean() }
        let labels = [2, 0, 4]
        expectGradients([randomTensor([3, 5], seed: 22)]) { crossEntropy($0[0], labels: labels) }
        let logits = randomTensor([3, 5], seed: 22)
        let direct = labels.enumerated().map { r, y in
            let row: [Double] = (0..<5).map { Double(logits.pointer[r * 5 + $0]) }
            let logSum: Double = log(row.map { exp($0) }.reduce(0.0) { $0 + $1 })
            return logSum - row[y]
        }.reduce(0.0) { $0 + $1 } / 3
        #expect(abs(Double(crossEntropy(logits, labels: labels).item) - direct) < 1e-6)
    }

    @Test func channelSlices() {
        expectGradients([randomTensor([2, 5, 3], seed: 13)]) { $0[0].channels(1..<4) * $0[0].channels(0..<3) }
    }

    /// The Gaussian terms of the variational bound, in the log variance (the means held fixed); x on
    /// the 8-bit grid, inner and edge bins, scales near those of the decoder at small t.
    @Test func likelihoodTerms() {
        let m1 = randomTensor([2, 7], seed: 14), lv1 = randomTensor([2, 7], seed: 15), m2 = randomTensor([2, 7], seed: 16)
        expectGradients([randomTensor([2, 7], seed: 17)]) { $0[0].gaussianKL(mean1: m1, logVariance1: lv1, mean2: m2) }
        let x = Tensor(shape: [6], [-1, -0.5019608, 0.0039216, 0.3333333, 0.8980392, 1])
        let mean = Tensor(shape: [6], [-0.99, -0.49, 0.01, 0.32, 0.91, 0.995])
        let logVariance = Tensor(shape: [6], [-8, -7.5, -9, -6, -8.5, -7])
        expectGradients([logVariance], h: 1e-3, rtol: 2e-2, atol: 1e-3) { $0[0].discretizedGaussianNLL(x: x, mean: mean) }
    }

    @Test func rows() {
        // repeated indices add their gradients into one row
        expectGradients([randomTensor([4, 6], seed: 12)]) { $0[0].rows([3, 0, 3, 1, 3]) * $0[0].rows([0, 1, 2, 3, 0]) }
    }

    @Test(arguments: [true, false])
    func linear(withBias: Bool) {
        let x = randomTensor([2, 3, 5], seed: 6), w = randomTensor([4, 5], seed: 7), b = randomTensor([4], seed: 8)
        expectGradients(withBias ? [x, w, b] : [x, w]) { $0[0].linear(weight: $0[1], bias: withBias ? $0[2] : nil) }
    }

    @Test(arguments: [
        // batch, channels, height, width, out, kernel, stride, pads (top, left, bottom, right)
        [2, 3, 5, 6, 4, 3, 1, 1, 1, 1, 1],
        [3, 2, 7, 5, 3, 3, 2, 1, 1, 1, 1],
        [2, 3, 6, 6, 2, 3, 2, 0, 0, 1, 1],
        [2, 5, 4, 3, 3, 1, 1, 0, 0, 0, 0],
        [1, 4, 9, 9, 2, 3, 1, 0, 0, 0, 0],
    ])
    func conv2d(geometry c: [Int]) {
        let x = randomTensor([c[0], c[1], c[2], c[3]], seed: 9)
        let w = randomTensor([c[4], c[1], c[5], c[5]], seed: 10, scale: 0.5)
        let b = randomTensor([c[4]], seed: 11)
        expectGradients([x, w, b]) { $0[0].conv2d(weight: $0[1], bias: $0[2], stride: c[6], padding: (c[7], c[8], c[9], c[10])) }
    }

    /// The convolution with its time-embedding shift and residual added in its output pass: every
    /// input's gradient, at a direct, a Winograd (64 channels, batch 2) and an im2col geometry.
    @Test(arguments: [[2, 3, 5, 6, 4, 3, 1], [2, 64, 4, 4, 64, 3, 1], [2, 3, 6, 6, 2, 3, 2]])
    func fusedConv2d(geometry c: [Int]) {
        let (n, o, k, stride) = (c[0], c[4], c[5], c[6])
        let x = randomTensor([n, c[1], c[2], c[3]], seed: 30)
        let w = randomTensor([o, c[1], k, k], seed: 31, scale: 0.5 / Float(c[1]).squareRoot())
        let b = randomTensor([o], seed: 32), shift = randomTensor([n, o], seed: 33)
        let residual = randomTensor([n, o, (c[2] + 2 - k) / stride + 1, (c[3] + 2 - k) / stride + 1], seed: 34)
        expectGradients([x, w, b, shift, residual]) {
            $0[0].conv2d(weight: $0[1], bias: $0[2], stride: stride, padding: (1, 1, 1, 1), shift: $0[3], residual: $0[4])
        }
    }

    @Test(arguments: [false, true])
    func groupNorm(silu: Bool) {
        let x = randomTensor([3, 6, 3, 7], seed: 12, scale: 2) + 0.5  // planes of 21: whole vectors and a tail
        let gamma = randomTensor([6], seed: 13), beta = randomTensor([6], seed: 14)
        expectGradients([x, gamma, beta], h: 5e-3) { $0[0].groupNorm(groups: 3, gamma: $0[1], beta: $0[2], epsilon: 1e-5, silu: silu) }
        expectGradients([x, gamma, beta], h: 5e-3) { $0[0].groupNorm(groups: 1, gamma: $0[1], beta: $0[2], epsilon: 1e-5, silu: silu) }
    }

    @Test func upsampleConcatTransposeReshape() {
        expectGradients([randomTensor([2, 3, 3, 5], seed: 15)]) { $0[0].upsampledNearest2x() }
        expectGradients([randomTensor([2, 3, 4], seed: 16), randomTensor([2, 2, 4], seed: 17)]) { concatChannels($0) }
        expectGradients([randomTensor([3, 4, 7], seed: 18)]) { $0[0].transposedLastTwo() }
        expectGradients([randomTensor([3, 4, 5], seed: 19)]) { ($0[0].reshaped([12, 5]) * $0[0].reshaped([12, 5])) }
    }

    /// An input that two pullbacks reach: the first writes its gradient (`gradientForWriting`),
    /// the second adds to it, whichever kind each is.
    @Test func inputsReachedTwice() {
        expectGradients([randomTensor([2, 3, 4], seed: 23)]) { concatChannels([$0[0], $0[0].transposedLastTwo().transposedLastTwo()]) }
        expectGradients([randomTensor([3, 4], seed: 24), randomTensor([4, 4], seed: 25)]) {
            $0[0].linear(weight: $0[1], bias: nil) * $0[0].linear(weight: $0[1], bias: nil) + $0[0]
        }
        let x = randomTensor([2, 3, 5, 5], seed: 26), w = randomTensor([3, 3, 3, 3], seed: 27, scale: 0.3)
        expectGradients([x, w]) { $0[0].conv2d(weight: $0[1], bias: nil, padding: (1, 1, 1, 1), residual: $0[0]) }
    }

    /// Widths 6 (heads of 6, 3, 2: the small-head kernel) and 72 (heads of 36: BLAS).
    @Test(arguments: [(1, 6), (2, 6), (3, 6), (2, 72)])
    func attention(heads: Int, width: Int) {
        let q = randomTensor([2, 5, width], seed: 20), k = randomTensor([2, 5, width], seed: 21), v = randomTensor([2, 5, width], seed: 22)
        expectGradients([q, k, v]) { scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], heads: heads) }
        // one tensor as query, key and value: its three gradients add onto each other
        expectGradients([q]) { scaledDotProductAttention(query: $0[0], key: $0[0], value: $0[0], heads: heads) }
    }

    @Test func reductionsAndLoss() {
        let a = randomTensor([3, 5], seed: 23), b = randomTensor([3, 5], seed: 24)
        expectGradients([a]) { $0[0].mean() }
        expectGradients([a]) { $0[0].sum() }
        expectGradients([a, b]) { meanSquaredError($0[0], $0[1]) }
    }

    @Test func dropout() {
        let x = randomTensor([4, 9], seed: 25)
        expectGradients([x]) { xs in
            var rng = RandomGenerator(seed: 99)  // the same mask on every evaluation
            return xs[0].dropout(0.3, using: &rng)
        }
        var rng = RandomGenerator(seed: 1)
        let y = Tensor(shape: [10_000], repeating: 1).dropout(0.25, using: &rng)
        let kept = y.scalars.filter { $0 != 0 }
        #expect(abs(Float(kept.count) / 10_000 - 0.75) < 0.02)
        #expect(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-6 })
    }

    /// A graph where one value feeds several consumers: gradients must add up.
    @Test func sharedSubexpressions() {
        let a = randomTensor([2, 3], seed: 26)
        expectGradients([a]) { xs in
            let s = xs[0].silu()
            return s * s + s * 3 + xs[0]
        }
    }

    /// The checker itself must fail on a wrong gradient: a function whose recorded backward is
    /// deliberately wrong (2x computed as a detached x plus x, so its recorded gradient is 1) is caught.
    @Test func checkerCatchesWrongGradient() {
        let a = randomTensor([5], seed: 27)
        let problems = gradientMismatches([a]) { xs in
            xs[0].detached + xs[0]  // forward 2x, gradient 1: wrong on purpose
        }
        #expect(!problems.isEmpty)
    }

    @Test func noRecordingInsideWithoutGradients() {
        let w = randomTensor([3], seed: 28).trainable()
        let y = withoutGradients { (w * w).silu() }
        #expect(!y.requiresGradient)
        #expect((w * w).requiresGradient)
    }
}
