import Foundation
import Tensors

/// The class of every image of a dataset, and the classes' names (index -> name, diffusers'
/// `id2label`). Labels come from the source itself (IDX label files, CIFAR-10's label byte, class
/// sub-folders) or from a `.npy` beside an array of images.
public struct ClassLabels: Sendable, Equatable {
    /// One label per image, each in `0..<names.count`.
    public let values: [Int]
    public let names: [String]

    /// Checks that every label names a class; `source` names the file in the error.
    public init(_ values: [Int], names: [String], source: URL) throws {
        if let i = values.firstIndex(where: { $0 < 0 || $0 >= names.count }) {
            throw FormatError(source, "label \(values[i]) of image \(i) is outside the \(names.count) classes 0..<\(names.count)")
        }
        self.values = values
        self.names = names
    }

    public var classCount: Int { names.count }

    /// Fashion-MNIST's classes in label order (Xiao et al. 2017, as torchvision names them).
    public static let fashionMNISTNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    /// CIFAR-10's classes in label order (`batches.meta.txt`).
    public static let cifar10Names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// Names "0", "1", ... for labels that come without names: as many as the largest label needs.
    public static func numberedNames(for values: [Int]) -> [String] {
        (0...max(values.max() ?? 0, 0)).map(String.init)
    }

    /// A `.npy` of integer labels [N] (int64, int32 or uint8), for `count` images; classes are
    /// numbered 0...max.
    public static func npy(_ url: URL, count: Int) throws -> ClassLabels {
        let a = try NPY.read(url)
        guard [.int64, .int32, .uint8].contains(a.element) else {
            throw FormatError(url, "labels must be integers (<i8, <i4 or |u1), are \(a.element.rawValue)")
        }
        guard a.shape.count == 1 else { throw FormatError(url, "labels must be one-dimensional [N], shape is \(a.shape)") }
        guard a.shape[0] == count else { throw FormatError(url, "\(a.shape[0]) labels for \(count) images") }
        let values = a.values.map { Int($0) }
        return try ClassLabels(values, names: numberedNames(for: values), source: url)
    }

    /// An IDX label file (raw or gzip): magic 0x00000801, big-endian N, then N class indices.
    /// Classes: Fashion-MNIST's names when the path says so, else numbered.
    public static func idx(_ url: URL, count: Int) throws -> ClassLabels {
        let values = try ImageDataset.idxLabels(url)
        guard values.count == count else { throw FormatError(url, "\(values.count) labels for \(count) images") }
        let fashion = url.path.lowercased().contains("fashion") && (values.max() ?? 0) < 10
        return try ClassLabels(values, names: fashion ? fashionMNISTNames : numberedNames(for: values), source: url)
    }

    /// The label file beside an IDX image file: `train-images-idx3-ubyte[.gz]` -> `train-labels-idx1-ubyte[.gz]`.
    public static func idxLabelFile(besides images: URL) -> URL? {
        let name = images.lastPathComponent
        guard name.contains("images-idx3") else { return nil }
        let base = name.replacingOccurrences(of: "images-idx3", with: "labels-idx1").replacingOccurrences(of: ".gz", with: "")
        return [base, base + ".gz"].map { images.deletingLastPathComponent().appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.path) }
    }
}
