import Datasets
@testable import Diffusion
import Foundation
import Layers
import Testing
import Tensors

/// The model `ddpm sample` uses by default, as committed under `models/` (or another folder named
/// by $DDPM_MODEL, as for the CLI, to measure a candidate with these tests).
let bundledModel = ProcessInfo.processInfo.environment["DDPM_MODEL"].map { URL(fileURLWithPath: $0) }
    ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("models/fashion-mnist")

/// The guidance scale the README recommends for the conditional model: the smallest of a sweep
/// (1, 1.5, 2, 3, 5) at which every class's share passes samplesFollowTheirClass.
let readmeGuidanceScale: Float = 3
let fashionMNIST = URL(fileURLWithPath: ImageDataset.fashionMNISTFolder)

@Suite struct BundledModelTests {
    /// The committed weights are trained and load as trained: on 64 held-out Fashion-MNIST images
    /// (the t10k set, never seen in training) noised at timesteps spread over the whole schedule,
    /// the model predicts the noise with a mean squared error far below the 1 that predicting
    /// zero gives (training's loss is about 0.04). Untrained, misloaded or mis-wired weights fail.
    @Test func predictsNoiseOnHeldOutImages() throws {
        let pipeline = try Pipeline.load(bundledModel)
        var unconditional = pipeline.unet.config
        unconditional.numClassEmbeds = nil; unconditional.classEmbedding = nil
        #expect(unconditional == UNetConfig.Preset.fmnist.config)
        let test = try ImageDataset.idx(fashionMNIST.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        let n = 64
        let x0 = Tensor(shape: [n, 1, 28, 28], Array(UnsafeBufferPointer(start: test.pixels.pointer, count: n * 784)))
        let schedule = NoiseSchedule(pipeline.schedulerConfig)
        let timesteps = (0..<n).map { $0 * schedule.count / n + 7 }
        var rng = RandomGenerator(seed: 3)
        let noise = Tensor.randomNormal(x0.shape, using: &rng)
        let xt = schedule.addNoise(x0, noise: noise, timesteps: timesteps)
        let labels = pipeline.unet.config.nullClassLabel.map { Array(repeating: $0, count: n) }  // p(x)
        let prediction = withoutGradients { pipeline.unet(xt, timesteps: timesteps.map(Float.init), classLabels: labels) }
        let error = meanSquaredError(prediction, noise).item
        print("bundled model: noise-prediction MSE \(error) on \(n) held-out images" + (labels == nil ? "" : " (null label)"))
        #expect(error < 0.08, "noise-prediction MSE \(error)")
        if labels != nil {
            // with the images' own labels, no worse than the unconditional model it replaced (0.035)
            let truth = try ImageDataset.idxLabels(fashionMNIST.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
            let conditional = withoutGradients { pipeline.unet(xt, timesteps: timesteps.map(Float.init), classLabels: Array(truth.prefix(n))) }
            let conditionalError = meanSquaredError(conditional, noise).item
            print("bundled model: noise-prediction MSE \(conditionalError) with the images' labels")
            #expect(conditionalError <= 0.035, "noise-prediction MSE with labels \(conditionalError)")
        }
    }

    /// Samples look like Fashion-MNIST's ten classes: a classifier trained here on the training set
    /// (an MLP, 784-256-10, softmax outputs fitted to one-hot labels) sorts 48 DDIM-20 samples into
    /// at least 8 classes, and is nearly as sure of them as of real test images (step 8,086: 0.84 on
    /// samples, 0.86 on test images). An untrained model's blobs fail (0.42), as would samples of one kind.
    @Test func samplesSpanTheClasses() throws {
        let classifier = try fashionMNISTClassifier()
        let test = try ImageDataset.idx(fashionMNIST.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        let testLabels = try ImageDataset.idxLabels(fashionMNIST.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
        let real = withoutGradients { classifier(Tensor(shape: [test.count, 784], storage: test.pixels)).softmax() }
        let realGuesses = guesses(real)
        let accuracy = Float(zip(realGuesses, testLabels).filter { $0.0.label == $0.1 }.count) / Float(test.count)
        let realConfidence = realGuesses.map(\.probability).reduce(0, +) / Float(test.count)

        let pipeline = try Pipeline.load(bundledModel)
        var rng = RandomGenerator(seed: 0)
        let labels = pipeline.unet.config.nullClassLabel.map { Array(repeating: $0, count: 48) }  // p(x)
        var loop = pipeline.denoise(Tensor.randomNormal(pipeline.sampleShape(count: 48), using: &rng),
                                    with: try pipeline.scheduler(.ddim, steps: 20), classLabels: labels, using: rng)
        let samples = loop.run()
        let drawn = guesses(withoutGradients { classifier(samples.reshaped([48, 784])).softmax() })
        var histogram = [Int](repeating: 0, count: 10)
        for g in drawn { histogram[g.label] += 1 }
        let confidence = drawn.map(\.probability).reduce(0, +) / Float(drawn.count)
        print("classifier: test accuracy \(accuracy), mean confidence \(realConfidence) on test images, "
              + "\(confidence) on 48 samples; samples per class \(histogram)")
        #expect(accuracy > 0.8, "classifier accuracy \(accuracy)")
        #expect(histogram.filter { $0 > 0 }.count >= 8, "samples per class \(histogram)")
        #expect(confidence > 0.8 * realConfidence, "confidence \(confidence) on samples, \(realConfidence) on test images")
    }

    /// A class-conditional bundled model draws the class it is asked for: the bundled classifier
    /// (a CNN trained on the training set, 92.5% on the test set; not the model's own features)
    /// assigns at least 90% of 20 DDIM-20 samples of each class to that class at the README's
    /// guidance scale, and guidance raises the share over W = 1. $DDPM_GUIDANCE_SWEEP="1,2,3,5"
    /// prints every class's share at those scales too, beside the classifier's own per-class
    /// accuracy on the test set (shirts, pullovers and coats are where it errs on real images too).
    @Test func samplesFollowTheirClass() throws {
        let pipeline = try Pipeline.load(bundledModel)
        guard let k = pipeline.classCount else { return }  // an unconditional bundled model: nothing to ask
        #expect(pipeline.classNames == ClassLabels.fashionMNISTNames)
        let classifier = try ImageClassifier.load(bundledClassifier)
        let perClass = 20
        /// For each class, the share of the images labelled with it that the classifier assigns to it.
        func sharesInClass(_ images: Tensor, labels: [Int]) -> [Float] {
            let drawn = guesses(withoutGradients { classifier(images).softmax() })
            return (0..<k).map { c in
                let rows = labels.indices.filter { labels[$0] == c }
                return Float(rows.filter { drawn[$0].label == c }.count) / Float(rows.count)
            }
        }
        func shares(_ scale: Float) throws -> [Float] {
            var rng = RandomGenerator(seed: 1)
            let labels = (0..<(k * perClass)).map { $0 / perClass }
            var loop = pipeline.denoise(Tensor.randomNormal(pipeline.sampleShape(count: labels.count), using: &rng),
                                        with: try pipeline.scheduler(.ddim, steps: 20), classLabels: labels,
                                        guidanceScale: scale, using: rng)
            return sharesInClass(loop.run(), labels: labels)
        }
        let sweep = ProcessInfo.processInfo.environment["DDPM_GUIDANCE_SWEEP"]?.split(separator: ",").compactMap { Float($0) } ?? []
        if !sweep.isEmpty {
            let test = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)
            let real = sharesInClass(test.images(0..<test.count), labels: test.labels!.values)
            print("the classifier's per-class accuracy on the \(test.count) test images: \(real)")
        }
        var results: [Float: [Float]] = [:]
        for scale in Set([1, readmeGuidanceScale] + sweep).sorted() {
            results[scale] = try shares(scale)
            let mean = results[scale]!.reduce(0, +) / Float(k)
            print("guidance \(scale): share of samples the classifier puts in their class, per class \(results[scale]!), mean \(mean)")
        }
        let guided = results[readmeGuidanceScale]!, plain = results[1]!
        #expect(guided.allSatisfy { $0 >= 0.9 }, "per-class shares at W = \(readmeGuidanceScale): \(guided)")
        #expect(guided.reduce(0, +) > plain.reduce(0, +), "guidance \(guided) against W = 1 \(plain)")
    }

    /// DDIM inversion then decoding (50 steps each, clipping off) gives back held-out images; with
    /// x_0 clipping on (the folder's DDPM setting) it does not. Interpolation frames between two
    /// inverted images are garments the bundled classifier is sure of.
    @Test func inversionReconstructsAndInterpolatesOnTheManifold() throws {
        let pipeline = try Pipeline.load(bundledModel)
        let test = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)
        let x = test.images(0..<4)
        let labels = pipeline.classCount.map { _ in Array(repeating: pipeline.unet.config.nullClassLabel!, count: 4) }
        let noise = try pipeline.invert(x, steps: 50, classLabels: labels)
        func rmse(clip: Bool) throws -> Float {
            var rng = RandomGenerator(seed: 0)
            let back = pipeline.generate(from: noise, with: try pipeline.scheduler(.ddim, steps: 50, clipSample: clip), classLabels: labels,
                                         batchSize: 4, using: &rng)
            return (zip(back.scalars, x.scalars).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Float(x.count)).squareRoot()
        }
        let (plain, clipped) = (try rmse(clip: false), try rmse(clip: true))
        print("DDIM-50 inversion of 4 test images: reconstruction RMSE \(plain) (clipping off), \(clipped) (clipping on), on [-1, 1]")
        #expect(plain < 0.1 && clipped > 2 * plain, "\(plain) \(clipped)")

        let frames = (0...5).map { slerp(noise.slice(0..<1), noise.slice(1..<2), Float($0) / 5) }
        var rng = RandomGenerator(seed: 0)
        let decoded = pipeline.generate(from: Tensor.joined(frames), with: try pipeline.scheduler(.ddim, steps: 50, clipSample: false),
                                        classLabels: labels.map { Array(repeating: $0[0], count: 6) }, batchSize: 6, using: &rng)
        let classifier = try ImageClassifier.load(bundledClassifier)
        let confidence = guesses(withoutGradients { classifier(decoded).softmax() }).map(\.probability)
        print("interpolation frames: the classifier's confidence \(confidence)")
        #expect(confidence.allSatisfy { $0 > 0.5 }, "\(confidence)")
    }

    /// RePaint on the lower half of 20 held-out images (DDPM_INPAINT_COUNT for more): the bundled
    /// classifier gives the result the original's class far more often than when the hole is filled
    /// from an unconditional sample.
    @Test func inpaintingKeepsTheGarment() throws {
        let pipeline = try Pipeline.load(bundledModel)
        let test = try ImageDataset.load("fashion-mnist", channels: 1, size: 28, split: .test)
        let n = ProcessInfo.processInfo.environment["DDPM_INPAINT_COUNT"].flatMap(Int.init) ?? 20
        let x = test.images(0..<n)
        let truth = Array(test.labels!.values.prefix(n))
        let mask = Tensor(shape: [1, 1, 28, 28], (0..<784).map { $0 < 392 ? 1 : 0 })  // keep the top half
        let labels = pipeline.classCount.map { _ in Array(repeating: pipeline.unet.config.nullClassLabel!, count: n) }
        var rng = RandomGenerator(seed: 1)
        let repaint = try RePaintSchedule(config: pipeline.schedulerConfig, steps: 50, jumpLength: 5, jumpSamples: 3)
        let inpainted = pipeline.inpaint(x, mask: mask, with: repaint, classLabels: labels, using: &rng)
        let samples = pipeline.generate(from: Tensor.randomNormal(x.shape, using: &rng), with: try pipeline.scheduler(.ddim, steps: 20),
                                        classLabels: labels, batchSize: 64, using: &rng)
        let pasted = masked(x, samples, mask: mask)
        let classifier = try ImageClassifier.load(bundledClassifier)
        func rate(_ images: Tensor) -> Float {
            let drawn = guesses(withoutGradients { classifier(images).softmax() })
            return Float(zip(drawn, truth).filter { $0.0.label == $0.1 }.count) / Float(n)
        }
        let (repainted, unconditional) = (rate(inpainted), rate(pasted))
        print("inpainting the lower half of \(n) test images: the original's class for \(repainted) (RePaint 50 steps, j 5, r 3), "
              + "\(unconditional) (the hole filled from an unconditional sample)")
        #expect(repainted >= unconditional + 0.1, "\(repainted) against \(unconditional)")
        for i in 0..<inpainted.count where mask.pointer[i % 784] == 1 { #expect(inpainted.pointer[i] == x.pointer[i]) }
    }

    /// The most probable class of each row of `probabilities` [N, 10], with its probability.
    func guesses(_ probabilities: Tensor) -> [(label: Int, probability: Float)] {
        let p = probabilities.scalars
        return (0..<probabilities.shape[0]).map { i in
            let row = p[(10 * i)..<(10 * i + 10)]
            let k = row.indices.max { row[$0] < row[$1] }!
            return (k - 10 * i, row[k])
        }
    }

    /// Two epochs of AdamW, batch 128, on the 60,000 training images.
    func fashionMNISTClassifier() throws -> MLP {
        let images = try ImageDataset.idx(fashionMNIST.appendingPathComponent("train-images-idx3-ubyte.gz"))
        let labels = try ImageDataset.idxLabels(fashionMNIST.appendingPathComponent("train-labels-idx1-ubyte.gz"))
        var rng = RandomGenerator(seed: 5)
        let net = MLP(widths: [784, 256, 10], using: &rng)
        let optimizer = AdamW(parameters: net.parameterTensors, learningRate: 1e-3, weightDecay: 0)
        let batch = 128
        for _ in 0..<2 {
            let order = Array(0..<images.count).shuffled(using: &rng)
            for start in stride(from: 0, to: images.count - batch + 1, by: batch) {
                let x = Tensor(zeros: [batch, 784]), y = Tensor(zeros: [batch, 10])
                for (row, i) in order[start..<(start + batch)].enumerated() {
                    x.pointer.advanced(by: 784 * row).update(from: images.pixels.pointer.advanced(by: 784 * i), count: 784)
                    y.pointer[10 * row + labels[i]] = 1
                }
                net.zeroGradients()
                meanSquaredError(net(x).softmax(), y).backward()
                optimizer.update()
            }
        }
        return net
    }
}
