import ArgumentParser
import Datasets
import Diffusion
import Foundation
import Tensors

/// Measures a model: its likelihood bound in bits per dimension on held-out images.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a model: the variational bound on held-out images in bits/dim (--bpd).",
        discussion: """
            --bpd computes Ho et al.'s bound (eq. 5) as improved-diffusion's calc_bpd_loop does: one \
            draw of x_t for every timestep of every image, KL terms in closed form, the discretised \
            Gaussian decoder at t = 0 (256 bins over [-1, 1]) and the prior term, in bits per dimension, \
            with the model's variance as its scheduler says (fixed_small or fixed_large). It reads the \
            source's test split where it has one (Fashion-MNIST's t10k files, CIFAR-10's test_batch.bin), \
            its first --count images. It costs one U-Net pass per timestep per image (1000 for DDPM): \
            fmnist on two cores, about 6 s an image. A class-conditional model is scored with the null \
            label (p(x)), or with the images' labels (p(x | y)) with --true-labels.
            """)

    @Option(help: "Model folder. Default: the bundled model.") var model: String?
    @Option(help: "Images: fashion-mnist, an IDX folder or file, CIFAR-10 batches, an image folder or a .npy.") var data: String
    @Flag(help: "The variational bound in bits per dimension.") var bpd = false
    @Option(help: "The first N images of the test split.") var count = 16
    @Option(help: "Timesteps per U-Net call.") var batchSize = 100
    @Option(help: "Random seed of the noise draws.") var seed: UInt64 = 0
    @Option(help: "Also write the terms by timestep (t, bits/dim) to this CSV, and a chart beside it (.png).") var terms: String?
    @Flag(help: "Class-conditional models: score p(x | y) with the images' own labels.") var trueLabels = false
    @Flag(help: "Print one JSON line.") var json = false

    func validate() throws {
        guard bpd else { throw ValidationError("say what to measure: --bpd") }
        guard count >= 1, batchSize >= 1 else { throw ValidationError("--count and --batch-size must be at least 1") }
        if let terms, !terms.hasSuffix(".csv") { throw ValidationError("--terms must end in .csv") }
    }

    func run() throws {
        let folder = try model.map { URL(fileURLWithPath: $0) } ?? BundledModel.folder()
        let pipeline = try Pipeline.load(folder)
        let c = pipeline.unet.config
        let dataset = try ImageDataset.load(data, channels: c.inChannels, size: c.sampleSize, split: .test)
        let n = min(count, dataset.count)
        let images = Tensor(shape: [n, c.inChannels, c.sampleSize, c.sampleSize],
                            Array(UnsafeBufferPointer(start: dataset.pixels.pointer, count: n * dataset.imageSize)))
        var labels: [Int]? = nil
        if trueLabels {
            guard let k = pipeline.classCount, let given = dataset.labels else {
                throw ValidationError("--true-labels needs a class-conditional model and labelled data")
            }
            guard given.classCount <= k else { throw CommandError("\(dataset.source): \(given.classCount) classes, the model knows \(k)") }
            labels = Array(given.values.prefix(n))
        }
        var rng = RandomGenerator(seed: seed)
        let bar = ProgressBar(total: n, label: "bits/dim")
        let began = Date()
        let result = pipeline.bitsPerDimension(images, labels: labels, batch: batchSize, using: &rng) { done in
            bar.update(done, detail: String(format: "%.1f s an image", Date().timeIntervalSince(began) / Double(done)))
        }
        let seconds = Date().timeIntervalSince(began)
        if let terms {
            var csv = "t,bits_per_dim\n"
            for (t, v) in result.meanTerms.enumerated() { csv += "\(t),\(v)\n" }
            csv += "prior,\(result.meanPrior)\n"
            try writeAtomically(Data(csv.utf8), to: URL(fileURLWithPath: terms))
            let chart = URL(fileURLWithPath: String(terms.dropLast(4)) + ".png")
            try lineChart(result.meanTerms.map { Float(log10(max($0, 1e-12))) }).writePNG(to: chart)
        }
        let scored = labels == nil ? (c.isClassConditional ? "p(x), null label" : "p(x)") : "p(x | y), true labels"
        if json {
            print(String(format: "{\"bits_per_dim\": %.5f, \"standard_error\": %.5f, \"images\": %d, \"prior_bits_per_dim\": %.6f, "
                         + "\"decoder_bits_per_dim\": %.5f, \"seconds\": %.1f}",
                         result.mean, result.standardError, n, result.meanPrior, result.meanTerms[0], seconds))
        } else {
            print(String(format: "%@: %.4f bits/dim (standard error %.4f over %d images of %@, %@); L_0 %.4f, L_T %.6f; %.0f s",
                         folder.path, result.mean, result.standardError, n, dataset.source, scored,
                         result.meanTerms[0], result.meanPrior, seconds))
        }
    }
}
