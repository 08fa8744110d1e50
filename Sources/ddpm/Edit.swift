import ArgumentParser
import Datasets
import Diffusion
import Foundation
import Tensors

/// What the image-conditioned commands share: the model, the input images, labels and output.
struct ImageInput: ParsableArguments {
    @Option(help: "Model folder. Default: the bundled model.") var model: String?
    @Option(name: .customLong("class"), help: "Class-conditional models: a class name, an index, all or none (default none: p(x)).")
    var classLabel: String?
    @Option(help: "Images a U-Net batch.") var batchSize = 64
    @Option(help: "Which images of a many-image source to take: comma-separated indices (default all), e.g. 0,1,2.")
    var pick: String?

    func pipeline() throws -> (Pipeline, URL) {
        let folder = try model.map { URL(fileURLWithPath: $0) } ?? BundledModel.folder()
        return (try Pipeline.load(folder), folder)
    }

    /// The images of `source` (a PNG or JPEG, a .npy [N, C, H, W] in [-1, 1], or any data source),
    /// fitted to the model's channels and size as the data loaders fit them.
    func images(_ source: String, for pipeline: Pipeline) throws -> Tensor {
        let c = pipeline.unet.config
        let set = try ImageDataset.load(source, channels: c.inChannels, size: c.sampleSize)
        var images = set.images(0..<set.count)  // the loader has checked the values are in [-1, 1]
        if let pick {
            let indices = pick.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !indices.isEmpty, indices.allSatisfy({ $0 != nil && (0..<set.count).contains($0!) }) else {
                throw ValidationError("--pick takes comma-separated indices below \(set.count) (the images in \(source)); got '\(pick)'")
            }
            images = Tensor.joined(indices.map { images.slice($0!..<($0! + 1)) })
        }
        return images
    }

    func labels(for pipeline: Pipeline, count: Int, guidanceScale: Float = 1) throws -> [Int]? {
        try Sample.classLabels(for: pipeline, count: count, classLabel: classLabel ?? (pipeline.classCount == nil ? nil : "none"),
                               guidanceScale: guidanceScale)
    }
}

/// Writes images as a .npy (exactly) or a PNG grid.
func writeImages(_ images: Tensor, to output: String, columns: Int? = nil, scale: Int? = nil) throws {
    let url = URL(fileURLWithPath: output)
    if output.hasSuffix(".npy") { try NPY.write(images, to: url) } else { try imageGrid(images, columns: columns, scale: scale).writePNG(to: url) }
}

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Edit images with a model (SDEdit): noise them partway and denoise.",
        discussion: """
            --strength S in [0, 1] says how far: of the sampler's N steps the last floor(N S) run, from \
            the image noised to where they begin (diffusers' img2img rule). 0 returns the images \
            unchanged (diffusers refuses a strength that keeps no step; here it is the limit of the \
            method); 1 runs every step, the image entering only with weight sqrt(abar) of the noisiest \
            step. --count N draws N edits of a single image with different noise.
            """)

    @OptionGroup var input: ImageInput
    @Option(help: "The image: a PNG or JPEG (resized and cropped to the model), or a .npy [N, C, H, W] in [-1, 1].") var image: String
    @Option(help: "How far to noise the image before denoising, in [0, 1].") var strength: Float
    @Option(help: "Sampler: ddpm, ddim, dpm++, euler, euler-a or heun. Default: the folder's.") var sampler: Pipeline.SamplerKind?
    @Option(help: "Inference steps of the full schedule (default: as ddpm sample).") var steps: Int?
    @Option(help: "Edits of a single input image, each with its own noise.") var count = 1
    @Option(help: "Classifier-free guidance scale W (class-conditional models).") var guidanceScale: Float = 1
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output: .png (a grid) or .npy.") var output = "edited.png"
    @Option(help: "Enlarge each image of a PNG K times.") var scale: Int?

    func validate() throws {
        guard strength.isFinite, strength >= 0, strength <= 1 else { throw ValidationError("--strength must lie in [0, 1], is \(strength)") }
        guard count >= 1, input.batchSize >= 1, (steps ?? 1) >= 1 else { throw ValidationError("--count, --batch-size and --steps must be at least 1") }
        guard output.hasSuffix(".png") || output.hasSuffix(".npy") else { throw ValidationError("--output must end in .png or .npy") }
    }

    func run() throws {
        let (pipeline, _) = try input.pipeline()
        var images = try input.images(image, for: pipeline)
        if images.shape[0] == 1 && count > 1 { images = Tensor.joined(Array(repeating: images, count: count)) }
        let kind = sampler ?? pipeline.defaultSampler
        let scheduler = try pipeline.scheduler(kind, steps: steps)
        let labels = try input.labels(for: pipeline, count: images.shape[0], guidanceScale: guidanceScale)
        var rng = RandomGenerator(seed: seed)
        let start = Pipeline.editStart(strength: strength, scheduler: scheduler)
        let calls = scheduler.timesteps.count - (start ?? scheduler.timesteps.count)
        let bar = ProgressBar(total: calls * ((images.shape[0] + input.batchSize - 1) / input.batchSize), label: "edit \(kind.rawValue)")
        let began = Date()
        let edited = pipeline.edit(images, strength: strength, with: scheduler, classLabels: labels, guidanceScale: guidanceScale,
                                   batchSize: input.batchSize, using: &rng) { done, _ in bar.update(done) }
        try writeImages(edited, to: output, scale: scale)
        let kept = (calls + scheduler.order - 1) / scheduler.order
        print(String(format: "wrote %@: %d images, strength %.2f (%d of %d %@ steps) in %.1f s",
                     output, edited.shape[0], strength, kept, scheduler.stepCount, kind.rawValue, Date().timeIntervalSince(began)))
    }
}

struct Invert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode images into the noise that DDIM decodes back to them (deterministic DDIM inversion).",
        discussion: """
            ddpm sample --noise NOISE.npy --sampler ddim --steps N --no-clip-sample (the same N) decodes it. \
            Clipping x_0 to [-1, 1], on in DDPM folders, is not invertible: keep it off to decode.
            """)

    @OptionGroup var input: ImageInput
    @Option(help: "The image: a PNG or JPEG, or a .npy [N, C, H, W] in [-1, 1].") var image: String
    @Option(help: "DDIM steps (decode with the same number).") var steps = 50
    @Option(help: "Output noise, a .npy [N, C, H, W].") var output = "noise.npy"

    func validate() throws {
        guard steps >= 1, input.batchSize >= 1 else { throw ValidationError("--steps and --batch-size must be at least 1") }
        guard output.hasSuffix(".npy") else { throw ValidationError("--output must end in .npy") }
    }

    func run() throws {
        let (pipeline, _) = try input.pipeline()
        let images = try input.images(image, for: pipeline)
        let labels = try input.labels(for: pipeline, count: images.shape[0])
        let began = Date()
        let bar = ProgressBar(total: steps * ((images.shape[0] + input.batchSize - 1) / input.batchSize), label: "invert")
        let noise = try pipeline.invert(images, steps: steps, classLabels: labels, batchSize: input.batchSize) { done, _ in bar.update(done) }
        try NPY.write(noise, to: URL(fileURLWithPath: output))
        print(String(format: "wrote %@: the DDIM-%d noise of %d images in %.1f s", output, steps, images.shape[0], Date().timeIntervalSince(began)))
    }
}

struct Interpolate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Frames between two images: their DDIM-inverted noises interpolated spherically, decoded with DDIM.")

    @OptionGroup var input: ImageInput
    @Option(help: "The two ends: --image twice (PNG, JPEG or a one-image .npy), or once for a source holding two (with --pick).")
    var image: [String] = []
    @Option(help: "Frames, the two ends included.") var frames = 8
    @Option(help: "DDIM steps for encoding and decoding.") var steps = 50
    @Option(help: "Output: .png (a strip) or .npy.") var output = "interpolation.png"
    @Option(help: "Enlarge each image of a PNG K times.") var scale: Int?

    func validate() throws {
        guard image.count == 2 || image.count == 1 else { throw ValidationError("give --image twice: the two ends") }
        guard frames >= 2, steps >= 1 else { throw ValidationError("--frames must be at least 2 and --steps at least 1") }
        guard output.hasSuffix(".png") || output.hasSuffix(".npy") else { throw ValidationError("--output must end in .png or .npy") }
    }

    func run() throws {
        let (pipeline, _) = try input.pipeline()
        var ends = try image.map { try input.images($0, for: pipeline) }
        if ends.count == 1 {
            guard ends[0].shape[0] == 2 else {
                throw CommandError("\(image[0]): \(ends[0].shape[0]) images; give --image twice, or one source of two images (--pick I,J)")
            }
            ends = [ends[0].slice(0..<1), ends[0].slice(1..<2)]
        }
        for (path, t) in zip(image, ends) where t.shape[0] != 1 {
            throw CommandError("\(path): holds \(t.shape[0]) images; interpolation takes one at each end (--pick one)")
        }
        let began = Date()
        let labels = try input.labels(for: pipeline, count: 1)
        let noise = try pipeline.invert(Tensor.joined(ends), steps: steps, classLabels: labels.map { $0 + $0 })
        let path = (0..<frames).map { slerp(noise.slice(0..<1), noise.slice(1..<2), Float($0) / Float(frames - 1)) }
        var rng = RandomGenerator(seed: 0)
        let decoded = pipeline.generate(from: Tensor.joined(path), with: try pipeline.scheduler(.ddim, steps: steps, clipSample: false),
                                        classLabels: labels.map { Array(repeating: $0[0], count: frames) },
                                        batchSize: input.batchSize, using: &rng)
        try writeImages(decoded, to: output, columns: frames, scale: scale)
        print(String(format: "wrote %@: %d frames in %.1f s", output, frames, Date().timeIntervalSince(began)))
    }
}

struct Inpaint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fill the masked part of images with a model (RePaint, as diffusers' RePaintPipeline).",
        discussion: """
            The mask is a PNG (or a .npy [H, W] or [1, 1, H, W]) of the model's size holding only 0 and \
            255 (or 0 and 1): white (1) keeps a pixel, black (0) is filled (diffusers' convention). One \
            mask serves every image of a batch. RePaint denoises with DDIM (--eta) and replaces the \
            known pixels by the original noised to the same level; every --jump-length steps it \
            re-noises that many steps back and denoises again, --jump-n-sample - 1 times. \
            --jump-n-sample 1 is the plain replacement method. The defaults are the paper's \
            (250 steps, jumps of 10, 10 samples: 4,570 iterations, 2,410 U-Net calls).
            """)

    @OptionGroup var input: ImageInput
    @Option(help: "The image: a PNG or JPEG, or a .npy [N, C, H, W] in [-1, 1].") var image: String
    @Option(help: "The mask: white (1) keeps a pixel, black (0) is filled.") var mask: String
    @Option(help: "Denoising steps.") var steps = 250
    @Option(help: "Steps re-noised at each jump.") var jumpLength = 10
    @Option(help: "Times each stretch is denoised (1: no resampling).") var jumpNSample = 10
    @Option(help: "DDIM's eta for the unknown pixels.") var eta: Float = 0
    @Option(help: "Classifier-free guidance scale W (class-conditional models).") var guidanceScale: Float = 1
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Output: .png (a grid) or .npy.") var output = "inpainted.png"
    @Option(help: "Enlarge each image of a PNG K times.") var scale: Int?

    func validate() throws {
        guard steps >= 1, jumpLength >= 1, jumpNSample >= 1 else { throw ValidationError("--steps, --jump-length and --jump-n-sample must be at least 1") }
        guard eta >= 0 else { throw ValidationError("--eta must be 0 or more") }
        guard output.hasSuffix(".png") || output.hasSuffix(".npy") else { throw ValidationError("--output must end in .png or .npy") }
    }

    /// The mask as [1, 1, H, W] of 0 and 1.
    func readMask(size: Int) throws -> Tensor {
        let url = URL(fileURLWithPath: mask)
        let values: [Float], (h, w): (Int, Int)
        if mask.hasSuffix(".npy") {
            let t = try NPY.readTensor(url)
            guard t.shape.count == 2 || (t.shape.count == 4 && t.shape[0] == 1 && t.shape[1] == 1) else {
                throw FormatError(url, "mask has shape \(t.shape); expected [H, W] or [1, 1, H, W]")
            }
            (h, w) = (t.shape[t.rank - 2], t.shape[t.rank - 1])
            values = t.scalars
        } else {
            let png = try Image.readPNG(url)
            (h, w) = (png.height, png.width)
            values = (0..<(h * w)).map { Float(png.pixels[$0 * png.channels]) / 255 }
        }
        guard h == size && w == size else { throw FormatError(url, "mask is \(h)x\(w); the model's images are \(size)x\(size)") }
        if let bad = values.firstIndex(where: { $0 != 0 && $0 != 1 }) {
            throw FormatError(url, "mask is not binary: value \(values[bad] * (mask.hasSuffix(".npy") ? 1 : 255)) at pixel \(bad) "
                              + "(expected only 0 and 255 in a PNG, 0 and 1 in a .npy)")
        }
        return Tensor(shape: [1, 1, h, w], values)
    }

    func run() throws {
        let (pipeline, _) = try input.pipeline()
        let images = try input.images(image, for: pipeline)
        let maskTensor = try readMask(size: pipeline.unet.config.sampleSize)
        let repaint = try RePaintSchedule(config: pipeline.schedulerConfig, steps: steps, jumpLength: jumpLength, jumpSamples: jumpNSample, eta: eta)
        let labels = try input.labels(for: pipeline, count: images.shape[0], guidanceScale: guidanceScale)
        var rng = RandomGenerator(seed: seed)
        let bar = ProgressBar(total: repaint.timesteps.count * ((images.shape[0] + input.batchSize - 1) / input.batchSize), label: "inpaint")
        let began = Date()
        let result = pipeline.inpaint(images, mask: maskTensor, with: repaint, classLabels: labels, guidanceScale: guidanceScale,
                                      batchSize: input.batchSize, using: &rng) { done, _ in bar.update(done) }
        try writeImages(result, to: output, scale: scale)
        print(String(format: "wrote %@: %d images inpainted, %d iterations in %.1f s", output, result.shape[0], repaint.timesteps.count,
                     Date().timeIntervalSince(began)))
    }
}
