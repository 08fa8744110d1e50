import ArgumentParser
import Datasets
import Diffusion
import Distributed
import Foundation
import Layers
import Tensors

/// Measures a model: its likelihood bound in bits per dimension on held-out images, and the
/// quality of its samples against real ones in a classifier's features.
struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure a model: bits/dim on held-out images (--bpd), sample quality against real images (--fd).",
        discussion: """
            --bpd computes Ho et al.'s bound (eq. 5) as improved-diffusion's calc_bpd_loop does: one \
            draw of x_t for every timestep of every image, KL terms in closed form, the discretised \
            Gaussian decoder at t = 0 (256 bins over [-1, 1]) and the prior term, in bits per dimension, \
            with the model's variance as its scheduler says (fixed_small or fixed_large). It reads the \
            source's test split where it has one (Fashion-MNIST's t10k files, CIFAR-10's test_batch.bin), \
            its first --count images (default 16). It costs one U-Net pass per timestep per image (1000 for \
            DDPM): fmnist on two cores, about 6 s an image. A class-conditional model is scored with the \
            null label (p(x)), or with the images' labels (p(x | y)) with --true-labels.

            --fd draws --count images (default 1000) with --sampler and --steps (or reads them from \
            --samples: a .npy [N, C, H, W] in [-1, 1] or any data source, e.g. the training set for the \
            floor) and compares them with the whole test split of --data in the features of a classifier \
            trained on that data set (ddpm classifier train; default: the bundled Fashion-MNIST \
            classifier): the Frechet distance of the fitted Gaussians, KID (unbiased MMD^2, cubic \
            kernel, 100 subsets of up to 1000, mean and standard deviation over subsets) and \
            precision/recall (k = 3 nearest-neighbour manifolds, against as many real images as \
            generated). These are the measures of FID and KID computed in our classifier's 128 \
            features, not Inception's: compare them across models of one data set, never with \
            published FIDs.
            """)

    @Option(help: "Model folder. Default: the bundled model.") var model: String?
    @Option(help: "Images: fashion-mnist, an IDX folder or file, CIFAR-10 batches, an image folder or a .npy.") var data: String
    @Flag(help: "The variational bound in bits per dimension.") var bpd = false
    @Flag(help: "Sample quality: Frechet distance, KID and precision/recall in the classifier's features.") var fd = false
    @Option(help: "Images: the first N of the test split (--bpd, default 16); samples to draw (--fd, default 1000).") var count: Int?
    @Option(help: "U-Net batch: timesteps of one image (--bpd), images (--fd).") var batchSize = 100
    @Option(help: "Random seed of the noise draws.") var seed: UInt64 = 0
    @Option(help: "Also write the terms by timestep (t, bits/dim) to this CSV, and a chart beside it (.png).") var terms: String?
    @Flag(help: "Class-conditional models: score p(x | y) with the images' own labels.") var trueLabels = false
    @Option(help: "--fd: compare these images instead of drawing samples (.npy in [-1, 1], or any data source).") var samples: String?
    @Option(help: "--fd: the classifier folder (ddpm classifier train). Default: the bundled one.") var classifier: String?
    @Option(help: "--fd: sampler, ddpm, ddim, dpm++, euler, euler-a or heun. Default: the folder's scheduler class.")
    var sampler: Pipeline.SamplerKind?
    @Option(help: "--fd: inference steps. Default: all for ddpm, 50 for ddim, 25 for the others.") var steps: Int?
    @Flag(inversion: .prefixedNo, help: "--fd: clip x_0 to [-1, 1] (ddpm, ddim, heun). Default: the folder's clip_sample.")
    var clipSample: Bool?
    @Flag(inversion: .prefixedNo, help: "--fd: Karras et al.'s sigmas (dpm++, euler, heun). Default: the folder's.") var karras: Bool?
    @Option(help: "--fd: DDIM's eta.") var eta: Float = 0
    @Option(name: .customLong("class"), help: "--fd, class-conditional models: a class name, an index, all or none (default all).")
    var classLabel: String?
    @Option(help: "--fd: classifier-free guidance scale W.") var guidanceScale: Float = 1
    @Flag(help: "Print one JSON line.") var json = false

    func validate() throws {
        guard bpd || fd else { throw ValidationError("say what to measure: --bpd, --fd or both") }
        guard (count ?? 2) >= 2, batchSize >= 1 else { throw ValidationError("--count must be at least 2 and --batch-size at least 1") }
        if let terms, !terms.hasSuffix(".csv") { throw ValidationError("--terms must end in .csv") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if samples != nil && bpd { throw ValidationError("--samples replaces the model's samples for --fd; --bpd needs the model itself") }
        guard eta >= 0, guidanceScale.isFinite, guidanceScale >= 0 else { throw ValidationError("--eta and --guidance-scale must be 0 or more") }
    }

    func run() throws {
        // under mpirun, --fd's samples are drawn by every rank (alternate batches) and measured on rank 0
        try onEveryRank { world in
            if world.isDistributed && samples != nil {
                throw ValidationError("under mpirun, evaluate splits --fd's sampling and --bpd's images; --samples runs in one process")
            }
            var report: [String] = []
            if bpd { report.append(try bitsPerDimension(world)) }
            if fd { report.append(try sampleQuality(world)) }
            guard world.isRoot else { return }
            print(json ? "{" + report.joined(separator: ", ") + "}" : report.joined(separator: "\n"))
        }
    }

    func bitsPerDimension(_ world: Communicator) throws -> String {
        let folder = try model.map { URL(fileURLWithPath: $0) } ?? BundledModel.folder()
        let pipeline = try Pipeline.load(folder)
        let c = pipeline.unet.config
        let dataset = try ImageDataset.load(data, channels: c.inChannels, size: c.sampleSize, split: .test)
        let n = min(count ?? 16, dataset.count)
        let images = dataset.images(0..<n)
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
        // over K ranks each scores images i with i mod K = r, and the shares are summed
        let share = pipeline.bitsPerDimension(images, labels: labels, batch: batchSize, share: (world.rank, world.size), using: &rng) { done in
            bar.update(done, detail: String(format: "%.1f s an image", Date().timeIntervalSince(began) / Double(done)))
        }
        let result = world.isDistributed ? BitsPerDimension(packed: world.sum(share.packed), images: n) : share
        let seconds = Date().timeIntervalSince(began)
        if let terms, world.isRoot {
            var csv = "t,bits_per_dim\n"
            for (t, v) in result.meanTerms.enumerated() { csv += "\(t),\(v)\n" }
            csv += "prior,\(result.meanPrior)\n"
            try writeAtomically(Data(csv.utf8), to: URL(fileURLWithPath: terms))
            let chart = URL(fileURLWithPath: String(terms.dropLast(4)) + ".png")
            try lineChart(result.meanTerms.map { Float(log10(max($0, 1e-12))) }).writePNG(to: chart)
        }
        let scored = labels == nil ? (c.isClassConditional ? "p(x), null label" : "p(x)") : "p(x | y), true labels"
        if json {
            return String(format: "\"bits_per_dim\": %.5f, \"standard_error\": %.5f, \"images\": %d, \"prior_bits_per_dim\": %.6f, "
                          + "\"decoder_bits_per_dim\": %.5f, \"seconds\": %.1f",
                          result.mean, result.standardError, n, result.meanPrior, result.meanTerms[0], seconds)
        }
        return String(format: "%@: %.4f bits/dim (standard error %.4f over %d images of %@, %@); L_0 %.4f, L_T %.6f; %.0f s",
                      folder.path, result.mean, result.standardError, n, dataset.source, scored,
                      result.meanTerms[0], result.meanPrior, seconds)
    }

    func sampleQuality(_ world: Communicator) throws -> String {
        let classifierFolder = try classifier.map { URL(fileURLWithPath: $0) } ?? BundledModel.classifierFolder()
        let net = try ImageClassifier.load(classifierFolder)
        let (c, size) = (net.config.inChannels, net.config.sampleSize)
        let real = try ImageDataset.load(data, channels: c, size: size, split: .test)
        let began = Date()
        let generated: Tensor, what: String
        if let samples {
            let set = try ImageDataset.load(samples, channels: c, size: size)
            let n = min(count ?? 1000, set.count)
            generated = set.images(0..<n)
            what = "\(n) images of \(set.source)"
        } else {
            let folder = try model.map { URL(fileURLWithPath: $0) } ?? BundledModel.folder()
            let pipeline = try Pipeline.load(folder)
            let shape = pipeline.sampleShape(count: count ?? 1000)
            guard shape[1] == c, shape[2] == size else {
                throw CommandError("\(folder.path) draws \(shape[1])x\(shape[2])x\(shape[3]) images; the classifier in "
                                   + "\(classifierFolder.path) takes \(c)x\(size)x\(size)")
            }
            let kind = sampler ?? pipeline.defaultSampler
            let scheduler = try pipeline.scheduler(kind, steps: steps, eta: eta, karras: karras, clipSample: clipSample)
            let stepCount = steps ?? kind.defaultSteps(pipeline.schedulerConfig.numTrainTimesteps)
            if world.isRoot { Sample.warnIfClipping(kind, clipSample ?? pipeline.schedulerConfig.clipSample, guidanceScale: guidanceScale) }
            let labels = try Sample.classLabels(for: pipeline, count: shape[0], classLabel: classLabel, guidanceScale: guidanceScale)
            var rng = RandomGenerator(seed: seed)
            let bar = ProgressBar(total: scheduler.timesteps.count * ((shape[0] + batchSize - 1) / batchSize / world.size),
                                  label: "\(kind.rawValue) \(stepCount) steps")
            // the same images as drawing all the noise first; over K ranks, rank 0 gathers them
            var batches: [Tensor] = []
            let gatherer = BatchGatherer(world, count: shape[0], batchSize: batchSize, shape: pipeline.sampleShape) { batches.append($0) }
            try pipeline.generate(count: shape[0], with: scheduler, classLabels: labels, guidanceScale: guidanceScale, batchSize: batchSize,
                                  share: (world.rank, world.size), using: &rng, progress: { done, _ in bar.update(done) },
                                  deliver: gatherer.deliver)
            try gatherer.finish()
            guard world.isRoot else { return "" }
            generated = Tensor.joined(batches)
            what = "\(shape[0]) samples of \(folder.path), \(kind.rawValue) \(stepCount) steps" + (karras == true ? " (Karras sigmas)" : "")
                + (guidanceScale != 1 ? ", guidance \(guidanceScale)" : "")
        }
        if let bad = generated.scalars.firstIndex(where: { !$0.isFinite }) {
            throw CommandError("\(what): a non-finite value at index \(bad); nothing to measure")
        }
        let drawn = Date().timeIntervalSince(began)
        let reference = try ReferenceStatistics.cached(in: classifierFolder, source: real.source, count: real.count)
        let result = SampleQualityReport(generated: generated, real: real.images(0..<real.count), classifier: net,
                                         realStatistics: reference, seed: seed)
        let seconds = Date().timeIntervalSince(began)
        if json {
            return String(format: "\"fd\": %.4f, \"kid\": %.6f, \"kid_std\": %.6f, \"precision\": %.4f, \"recall\": %.4f, "
                          + "\"samples\": %d, \"real\": %d, \"sampling_seconds\": %.1f, \"fd_seconds\": %.1f",
                          result.frechetDistance, result.kernelDistance.mean, result.kernelDistance.standardDeviation,
                          result.precisionRecall.precision, result.precisionRecall.recall, result.generated, result.real,
                          drawn, seconds - drawn)
        }
        return String(format: "%@ against %d test images of %@, in the features of %@:\n"
                      + "  FD %.3f   KID %.5f (sd %.5f over %d subsets of %d)   precision %.3f   recall %.3f   (%.0f s)",
                      what, real.count, real.source, classifierFolder.path, result.frechetDistance, result.kernelDistance.mean,
                      result.kernelDistance.standardDeviation, result.kernelDistance.subsets, result.kernelDistance.subsetSize,
                      result.precisionRecall.precision, result.precisionRecall.recall, seconds)
    }
}
