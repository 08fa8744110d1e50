import CSTB
import CZlib
import Foundation
import Tensors

/// Training images in memory as one float32 block [N, C, H, W] in [-1, 1], from any of the
/// sources users bring: IDX files (the MNIST family; Debian's Fashion-MNIST), CIFAR-10 binary
/// batches, a folder of PNG/JPEG images, or a `.npy` array. Class labels come along where the
/// source has them (IDX label files, CIFAR-10's label byte, class sub-folders, `--labels FILE.npy`).
public struct ImageDataset: @unchecked Sendable {
    public let count: Int, channels: Int, height: Int, width: Int
    /// [N, C, H, W] in [-1, 1].
    public let pixels: Storage
    /// Where the images came from, for logs and checkpoints.
    public let source: String
    /// The class of each image, when the source has labels.
    public let labels: ClassLabels?

    public var imageSize: Int { channels * height * width }

    public init(pixels: Storage, count: Int, channels: Int, height: Int, width: Int, source: String, labels: ClassLabels? = nil) {
        require(pixels.count == count * channels * height * width)
        require(labels == nil || labels!.values.count == count, "\(labels!.values.count) labels for \(count) images")
        self.pixels = pixels; self.count = count; self.channels = channels
        self.height = height; self.width = width; self.source = source; self.labels = labels
    }

    /// Images `range` as a tensor [n, C, H, W].
    public func images(_ range: Range<Int>) -> Tensor {
        require(range.lowerBound >= 0 && range.upperBound <= count, "images \(range) of \(count)")
        let s = Storage(uninitializedCount: range.count * imageSize)
        s.pointer.update(from: pixels.pointer + range.lowerBound * imageSize, count: range.count * imageSize)
        return Tensor(shape: [range.count, channels, height, width], storage: s)
    }

    /// The same images with other labels.
    public func labelled(_ labels: ClassLabels?) -> ImageDataset {
        ImageDataset(pixels: pixels, count: count, channels: channels, height: height, width: width, source: source, labels: labels)
    }

    /// Which part of a source: training images, or the test set where the source has one.
    public enum Split: String, Sendable { case train, test }

    /// Debian's package `dataset-fashion-mnist`.
    public static let fashionMNISTFolder = "/usr/share/datasets/fashion-mnist"

    /// Loads `source` and fits it to the model: `channels` (grey and RGB convert into each other)
    /// and a square `size` (image folders are resized and centre-cropped; other sources must match).
    /// `source` is `fashion-mnist`, an IDX folder or file, a CIFAR-10 folder, an image folder, one
    /// PNG or JPEG (resized and cropped as a folder's), or a `.npy`.
    /// `labels`, a `.npy` of integers, gives (or replaces) the images' class labels. `split` .test
    /// reads the source's test set where it has one (IDX `t10k-*` files, CIFAR-10's `test_batch.bin`).
    public static func load(_ source: String, channels: Int, size: Int, labels: String? = nil,
                            split: Split = .train) throws -> ImageDataset {
        let path = source == "fashion-mnist" ? fashionMNISTFolder : source
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            if source == "fashion-mnist" {
                throw FormatError(url, "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (make setup does it)")
            }
            throw FormatError(url, "no such file or folder")
        }
        var data: ImageDataset
        if !isDirectory.boolValue {
            if path.hasSuffix(".npy") {
                data = try npy(url)
            } else if ["png", "jpg", "jpeg"].contains(url.pathExtension.lowercased()) {
                data = try imageFolder(url.deletingLastPathComponent(), names: [url.lastPathComponent], channels: channels, size: size)
            } else {
                data = try idx(url)
            }
        } else {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            let trainIDX = names.first { $0.hasPrefix("train-images-idx3-ubyte") }, testIDX = names.first { $0.hasPrefix("t10k-images-idx3-ubyte") }
            let trainCIFAR = names.filter { $0.hasPrefix("data_batch_") && $0.hasSuffix(".bin") }
            if let images = split == .test ? testIDX ?? trainIDX : trainIDX {
                data = try idx(url.appendingPathComponent(images))
            } else if split == .test && names.contains("test_batch.bin") {
                data = try cifar10(url, files: ["test_batch.bin"])
            } else if !trainCIFAR.isEmpty {
                data = try cifar10(url, files: trainCIFAR)
            } else {
                data = try imageFolder(url, names: names, channels: channels, size: size)
            }
        }
        if let labels {
            data = data.labelled(try ClassLabels.npy(URL(fileURLWithPath: labels), count: data.count))
        }
        data = data.converted(toChannels: channels)
        guard data.height == size && data.width == size else {
            throw FormatError(url, "images are \(data.height)x\(data.width); the model needs \(size)x\(size)")
        }
        return data
    }

    // MARK: Formats

    /// IDX (LeCun's MNIST format), raw or gzip: magic 0x00000803 (unsigned bytes, 3 dimensions),
    /// big-endian sizes N, H, W, then N H W bytes.
    public static func idx(_ url: URL) throws -> ImageDataset {
        let bytes = try gunzipIfNeeded(url)
        guard bytes.count >= 16 else { throw FormatError(url, "IDX file of \(bytes.count) bytes is too short for a header") }
        func be32(_ o: Int) -> Int { bigEndian32(bytes, at: o) }
        let magic = be32(0)
        guard magic == 0x0803 else {
            throw FormatError(url, String(format: "wrong IDX magic 0x%08x (images are 0x00000803%@)", magic,
                                          magic == 0x0801 ? "; this is a label file" : ""))
        }
        let (n, h, w) = (be32(4), be32(8), be32(12))
        guard n > 0, h > 0, w > 0, let size = checkedProduct([n, h, w]), bytes.count - 16 == size else {
            throw FormatError(url, "header says \(n) images of \(h)x\(w) (\(Double(n) * Double(h) * Double(w)) bytes), the file holds \(bytes.count - 16): truncated?")
        }
        let storage = Storage(uninitializedCount: n * h * w)
        for i in 0..<(n * h * w) { storage.pointer[i] = Float(bytes[16 + i]) / 127.5 - 1 }
        let labels = try ClassLabels.idxLabelFile(besides: url).map { try ClassLabels.idx($0, count: n) }
        return ImageDataset(pixels: storage, count: n, channels: 1, height: h, width: w, source: url.path, labels: labels)
    }

    /// An IDX label file, raw or gzip: magic 0x00000801 (unsigned bytes, 1 dimension), big-endian N,
    /// then N class indices (tests use Fashion-MNIST's labels to judge samples).
    public static func idxLabels(_ url: URL) throws -> [Int] {
        let bytes = try gunzipIfNeeded(url)
        guard bytes.count >= 8, bigEndian32(bytes, at: 0) == 0x0801 else { throw FormatError(url, "not an IDX label file (magic 0x00000801)") }
        let n = bigEndian32(bytes, at: 4)
        guard bytes.count - 8 == n else { throw FormatError(url, "header says \(n) labels, the file holds \(bytes.count - 8): truncated?") }
        return bytes[8...].map(Int.init)
    }

    /// CIFAR-10 binary batches: records of 1 label byte + 3072 bytes (3 x 32 x 32, CHW). The
    /// classes' names come from `batches.meta.txt` when the folder has it.
    public static func cifar10(_ folder: URL, files: [String]) throws -> ImageDataset {
        var all: [UInt8] = [], labels: [Int] = []
        for name in files.sorted() {
            let url = folder.appendingPathComponent(name)
            let d = try Data(contentsOf: url)
            guard !d.isEmpty, d.count % 3073 == 0 else {
                throw FormatError(url, "\(d.count) bytes is not a whole number of 3073-byte CIFAR-10 records: truncated?")
            }
            for r in 0..<(d.count / 3073) {
                labels.append(Int(d[d.startIndex + r * 3073]))
                all.append(contentsOf: d[(d.startIndex + r * 3073 + 1)..<(d.startIndex + (r + 1) * 3073)])
            }
        }
        let n = all.count / 3072
        let storage = Storage(uninitializedCount: all.count)
        for i in 0..<all.count { storage.pointer[i] = Float(all[i]) / 127.5 - 1 }
        let meta = (try? String(contentsOf: folder.appendingPathComponent("batches.meta.txt"), encoding: .utf8))?
            .split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let names = meta.map { $0.count > (labels.max() ?? 0) ? $0 : ClassLabels.cifar10Names } ?? ClassLabels.cifar10Names
        return ImageDataset(pixels: storage, count: n, channels: 3, height: 32, width: 32, source: folder.path,
                            labels: try ClassLabels(labels, names: names, source: folder))
    }

    /// A `.npy` array [N, C, H, W] (or [N, H, W]): uint8 is scaled from 0..255, floats are taken as
    /// already in [-1, 1].
    public static func npy(_ url: URL) throws -> ImageDataset {
        let a = try NPY.read(url)
        let shape = a.shape.count == 3 ? [a.shape[0], 1, a.shape[1], a.shape[2]] : a.shape
        guard shape.count == 4, shape.allSatisfy({ $0 > 0 }) else {
            throw FormatError(url, "shape \(a.shape) is not [N, C, H, W] or [N, H, W]")
        }
        let storage = Storage(uninitializedCount: a.values.count)
        let scale = a.element == .uint8
        for i in 0..<a.values.count { storage.pointer[i] = scale ? Float(a.values[i]) / 127.5 - 1 : Float(a.values[i]) }
        // float images must already be in [-1, 1]: a NaN or a 0..255 array found here costs a second, found at step 40,000 hours
        if !scale, let bad = (0..<a.values.count).first(where: { !(abs(storage.pointer[$0]) <= 1.0001) }) {
            throw FormatError(url, "value \(a.values[bad]) at index \(bad) is not in [-1, 1] (float images are [-1, 1]; "
                              + "store 0..255 pixels as uint8, which are scaled)")
        }
        return ImageDataset(pixels: storage, count: shape[0], channels: shape[1], height: shape[2], width: shape[3], source: url.path)
    }

    /// Every PNG and JPEG in a folder, decoded by stb_image, resized (shorter side to `size`,
    /// bilinear) and centre-cropped to size x size. A folder of sub-folders of images is a labelled
    /// set, as torchvision's `ImageFolder` reads it: the sorted sub-folder names are the classes.
    public static func imageFolder(_ folder: URL, names: [String], channels: Int, size: Int) throws -> ImageDataset {
        func isImage(_ name: String) -> Bool { ["png", "jpg", "jpeg"].contains((name as NSString).pathExtension.lowercased()) }
        var files = names.filter(isImage)
        var labels: ClassLabels? = nil
        if files.isEmpty {
            let fm = FileManager.default
            let classes = names.filter { name in
                var isDirectory: ObjCBool = false
                return !name.hasPrefix(".") && fm.fileExists(atPath: folder.appendingPathComponent(name).path, isDirectory: &isDirectory)
                    && isDirectory.boolValue
            }
            var values: [Int] = []
            for (k, name) in classes.enumerated() {
                let inside = try fm.contentsOfDirectory(atPath: folder.appendingPathComponent(name).path).filter(isImage).sorted()
                files += inside.map { "\(name)/\($0)" }
                values += Array(repeating: k, count: inside.count)
            }
            if !files.isEmpty { labels = try ClassLabels(values, names: classes, source: folder) }
        }
        guard !files.isEmpty else {
            throw FormatError(folder, "no images found (expected PNG or JPEG files or class sub-folders of them, IDX, CIFAR-10 batches or a .npy)")
        }
        let per = channels * size * size
        let storage = Storage(uninitializedCount: files.count * per)
        for (k, name) in files.enumerated() {
            let url = folder.appendingPathComponent(name)
            var w: Int32 = 0, h: Int32 = 0, c: Int32 = 0
            guard let raw = stbi_load(url.path, &w, &h, &c, Int32(channels)) else {
                throw FormatError(url, "cannot decode the image (\(String(cString: stbi_failure_reason())))")
            }
            defer { stbi_image_free(raw) }
            resizeCrop(raw, width: Int(w), height: Int(h), channels: channels, size: size, into: storage.pointer + k * per)
        }
        return ImageDataset(pixels: storage, count: files.count, channels: channels, height: size, width: size, source: folder.path,
                            labels: labels)
    }

    /// Bilinear resize of the shorter side to `size`, centre crop, HWC bytes to CHW floats in [-1, 1].
    static func resizeCrop(_ src: UnsafePointer<UInt8>, width w: Int, height h: Int, channels c: Int, size: Int,
                           into dst: UnsafeMutablePointer<Float>) {
        let scale = Double(min(w, h)) / Double(size)
        let x0 = (Double(w) - scale * Double(size)) / 2, y0 = (Double(h) - scale * Double(size)) / 2
        for y in 0..<size {
            let sy = min(max(y0 + (Double(y) + 0.5) * scale - 0.5, 0), Double(h - 1))
            let iy = Int(sy), fy = sy - Double(iy), iy1 = min(iy + 1, h - 1)
            for x in 0..<size {
                let sx = min(max(x0 + (Double(x) + 0.5) * scale - 0.5, 0), Double(w - 1))
                let ix = Int(sx), fx = sx - Double(ix), ix1 = min(ix + 1, w - 1)
                for ch in 0..<c {
                    func p(_ yy: Int, _ xx: Int) -> Double { Double(src[(yy * w + xx) * c + ch]) }
                    let v = (p(iy, ix) * (1 - fx) + p(iy, ix1) * fx) * (1 - fy) + (p(iy1, ix) * (1 - fx) + p(iy1, ix1) * fx) * fy
                    dst[(ch * size + y) * size + x] = Float(v / 127.5 - 1)
                }
            }
        }
    }

    /// Grey to RGB by repetition, RGB to grey by luminance (ITU-R 601 weights).
    func converted(toChannels c: Int) -> ImageDataset {
        if c == channels { return self }
        let plane = height * width
        let out = Storage(uninitializedCount: count * c * plane)
        for n in 0..<count {
            let src = pixels.pointer + n * channels * plane, dst = out.pointer + n * c * plane
            for i in 0..<plane {
                if c == 3 && channels == 1 {
                    dst[i] = src[i]; dst[plane + i] = src[i]; dst[2 * plane + i] = src[i]
                } else {
                    dst[i] = 0.299 * src[i] + 0.587 * src[plane + i] + 0.114 * src[2 * plane + i]
                }
            }
        }
        return ImageDataset(pixels: out, count: count, channels: c, height: height, width: width, source: source, labels: labels)
    }
}

/// The unsigned big-endian 32-bit integer at `offset` (IDX headers).
func bigEndian32(_ bytes: [UInt8], at offset: Int) -> Int {
    bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
}

/// The bytes of a file, gunzipped when it is gzip (magic 1f 8b).
func gunzipIfNeeded(_ url: URL) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: url.path) else { throw FormatError(url, "cannot read the file") }
    guard data.count >= 2, data[data.startIndex] == 0x1F, data[data.startIndex + 1] == 0x8B else { return Array(data) }
    guard let file = gzopen(url.path, "rb") else { throw FormatError(url, "cannot open as gzip") }
    defer { gzclose(file) }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = buffer.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
        if n < 0 { throw FormatError(url, "corrupt gzip data") }
        if n == 0 { break }
        out.append(contentsOf: buffer[0..<Int(n)])
    }
    return out
}
