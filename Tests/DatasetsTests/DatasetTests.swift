import CSTB
import Datasets
import Foundation
import Testing
import Tensors
import TestSupport

@Suite struct DatasetTests {
    func idx(_ n: Int, _ h: Int, _ w: Int, magic: UInt32 = 0x0803, truncate: Int = 0) -> Data {
        var d = Data()
        for v in [magic, UInt32(n), UInt32(h), UInt32(w)] { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
        d.append(contentsOf: (0..<(n * h * w)).map { UInt8($0 % 256) })
        return d.prefix(d.count - truncate)
    }

    @Test func idxFileAndFolder() throws {
        let dir = temporaryDirectory()
        try idx(3, 4, 4).write(to: dir.appendingPathComponent("train-images-idx3-ubyte"))
        let d = try ImageDataset.load(dir.path, channels: 1, size: 4)
        #expect(d.count == 3 && d.channels == 1 && d.height == 4)
        #expect(d.pixels.pointer[0] == -1 && d.pixels.pointer[1] == 1 / 127.5 - 1)
        // grey data for an RGB model is repeated over three channels
        let rgb = try ImageDataset.load(dir.path, channels: 3, size: 4)
        #expect(rgb.channels == 3 && rgb.pixels.pointer[16] == rgb.pixels.pointer[0])
    }

    @Test func badIDXFiles() throws {
        let dir = temporaryDirectory()
        let cases: [(Data, String)] = [
            (idx(3, 4, 4, magic: 0x0801), "label file"),
            (idx(3, 4, 4, truncate: 5), "truncated"),
            (Data([1, 2, 3]), "too short"),
            // sizes whose product overflows an Int: refused, not trapped on
            (idx(0, 0, 0).prefix(4) + Data(repeating: 0xFF, count: 12) + Data([1]), "truncated"),
        ]
        for (i, (data, message)) in cases.enumerated() {
            let url = dir.appendingPathComponent("case\(i).idx")
            try data.write(to: url)
            let error = #expect(throws: FormatError.self) { try ImageDataset.load(url.path, channels: 1, size: 4) }
            #expect(error?.description.contains(message) == true, "\(error?.description ?? "")")
            #expect(error?.description.contains(url.path) == true)
        }
        // the right format at the wrong size
        let url = dir.appendingPathComponent("big.idx")
        try idx(2, 6, 6).write(to: url)
        #expect(throws: FormatError.self) { try ImageDataset.load(url.path, channels: 1, size: 4) }
    }

    @Test func idxLabelFiles() throws {
        let dir = temporaryDirectory()
        var labels = Data()
        for v in [UInt32(0x0801), 4] { withUnsafeBytes(of: v.bigEndian) { labels.append(contentsOf: $0) } }
        labels.append(contentsOf: [3, 0, 9, 1])
        let good = dir.appendingPathComponent("labels"), short = dir.appendingPathComponent("short"), images = dir.appendingPathComponent("images")
        try labels.write(to: good)
        try labels.prefix(10).write(to: short)
        try idx(3, 4, 4).write(to: images)
        #expect(try ImageDataset.idxLabels(good) == [3, 0, 9, 1])
        let truncated = #expect(throws: FormatError.self) { try ImageDataset.idxLabels(short) }
        #expect(truncated?.description.contains("truncated") == true)
        let notLabels = #expect(throws: FormatError.self) { try ImageDataset.idxLabels(images) }
        #expect(notLabels?.description.contains("not an IDX label file") == true)
    }

    func labelFile(_ labels: [UInt8]) -> Data {
        var d = Data()
        for v in [UInt32(0x0801), UInt32(labels.count)] { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
        return d + Data(labels)
    }

    /// Labels beside IDX images, CIFAR-10's label byte (names from batches.meta.txt), class
    /// sub-folders (sorted names, as torchvision's ImageFolder), and --labels .npy, with bad ones refused.
    @Test func labelsFromEverySource() throws {
        let dir = temporaryDirectory()
        try idx(3, 4, 4).write(to: dir.appendingPathComponent("train-images-idx3-ubyte"))
        try labelFile([2, 0, 1]).write(to: dir.appendingPathComponent("train-labels-idx1-ubyte"))
        let d = try ImageDataset.load(dir.path, channels: 1, size: 4)
        #expect(d.labels?.values == [2, 0, 1] && d.labels?.names == ["0", "1", "2"])
        try labelFile([2, 0]).write(to: dir.appendingPathComponent("train-labels-idx1-ubyte"))
        let short = #expect(throws: FormatError.self) { try ImageDataset.load(dir.path, channels: 1, size: 4) }
        #expect(short?.description.contains("2 labels for 3 images") == true, "\(short?.description ?? "")")

        let cifar = temporaryDirectory()
        var record = Data([9]) + Data((0..<3072).map { UInt8($0 % 251) })
        try (record + record).write(to: cifar.appendingPathComponent("data_batch_1.bin"))
        let c = try ImageDataset.load(cifar.path, channels: 3, size: 32)
        #expect(c.labels?.values == [9, 9] && c.labels?.names == ClassLabels.cifar10Names)
        try Data("a\nb\nc\n".utf8).write(to: cifar.appendingPathComponent("batches.meta.txt"))
        record[0] = 2
        try record.write(to: cifar.appendingPathComponent("data_batch_1.bin"))
        #expect(try ImageDataset.load(cifar.path, channels: 3, size: 32).labels?.names == ["a", "b", "c"])
        record[0] = 12  // not one of CIFAR-10's classes
        try record.write(to: cifar.appendingPathComponent("data_batch_1.bin"))
        let outside = #expect(throws: FormatError.self) { try ImageDataset.load(cifar.path, channels: 3, size: 32) }
        #expect(outside?.description.contains("label 12 of image 0 is outside the 10 classes") == true, "\(outside?.description ?? "")")

        let folder = temporaryDirectory()
        for (name, count) in [("dogs", 2), ("cats", 1)] {
            let sub = folder.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            for i in 0..<count {
                try Image(width: 4, height: 4, channels: 1, pixels: Array(repeating: 9, count: 16)).writePNG(to: sub.appendingPathComponent("\(i).png"))
            }
        }
        let f = try ImageDataset.load(folder.path, channels: 1, size: 4)
        #expect(f.count == 3 && f.labels?.names == ["cats", "dogs"] && f.labels?.values == [0, 1, 1])

        let npy = temporaryDirectory()
        let images = npy.appendingPathComponent("x.npy"), labels = npy.appendingPathComponent("y.npy")
        try NPY.encode(shape: [3, 1, 4, 4], float32: Array(repeating: 0, count: 48)).write(to: images)
        try NPY.encode(shape: [3], int64: [4, 0, 4]).write(to: labels)
        let n = try ImageDataset.load(images.path, channels: 1, size: 4, labels: labels.path)
        #expect(n.labels?.values == [4, 0, 4] && n.labels?.classCount == 5)
        try NPY.encode(shape: [2], int64: [1, 0]).write(to: labels)
        let count = #expect(throws: FormatError.self) { try ImageDataset.load(images.path, channels: 1, size: 4, labels: labels.path) }
        #expect(count?.description.contains("2 labels for 3 images") == true)
        try NPY.encode(shape: [3], int64: [1, -1, 0]).write(to: labels)
        let negative = #expect(throws: FormatError.self) { try ImageDataset.load(images.path, channels: 1, size: 4, labels: labels.path) }
        #expect(negative?.description.contains("label -1 of image 1") == true, "\(negative?.description ?? "")")
        try NPY.encode(shape: [3], float32: [1, 0, 0]).write(to: labels)
        #expect(throws: FormatError.self) { try ImageDataset.load(images.path, channels: 1, size: 4, labels: labels.path) }
    }

    @Test func fashionMNISTFromDebian() throws {
        let d = try ImageDataset.load("fashion-mnist", channels: 1, size: 28)
        #expect(d.count == 60_000 && d.height == 28 && d.width == 28)
        #expect(d.labels?.names == ClassLabels.fashionMNISTNames && d.labels?.values.count == 60_000)
        let values = UnsafeBufferPointer(start: d.pixels.pointer, count: 784 * 100)
        #expect(values.allSatisfy { $0 >= -1 && $0 <= 1 } && values.contains { $0 > 0.5 })
    }

    @Test func cifar10Batches() throws {
        let dir = temporaryDirectory()
        var record = Data([7])  // label byte, then 3 x 32 x 32
        record.append(contentsOf: (0..<3072).map { UInt8($0 % 251) })
        try (record + record).write(to: dir.appendingPathComponent("data_batch_1.bin"))
        try record.write(to: dir.appendingPathComponent("data_batch_2.bin"))
        let d = try ImageDataset.load(dir.path, channels: 3, size: 32)
        #expect(d.count == 3 && d.channels == 3)
        #expect(d.pixels.pointer[1] == 1 / 127.5 - 1)  // the label byte is skipped
        try record.prefix(100).write(to: dir.appendingPathComponent("data_batch_3.bin"))
        let error = #expect(throws: FormatError.self) { try ImageDataset.load(dir.path, channels: 3, size: 32) }
        #expect(error?.description.contains("data_batch_3.bin") == true)
    }

    @Test func npyArrays() throws {
        let dir = temporaryDirectory()
        let url = dir.appendingPathComponent("x.npy")
        try NPY.encode(shape: [2, 1, 4, 4], float32: (0..<32).map { Float($0) / 32 - 0.5 }).write(to: url)
        let d = try ImageDataset.load(url.path, channels: 1, size: 4)
        #expect(d.count == 2 && d.pixels.pointer[31] == 31.0 / 32 - 0.5)
        try NPY.encode(shape: [5], float32: [1, 2, 3, 4, 5]).write(to: url)
        #expect(throws: FormatError.self) { try ImageDataset.load(url.path, channels: 1, size: 4) }
    }

    @Test func imageFolderWithPNGAndJPEG() throws {
        let dir = temporaryDirectory()
        // an 8x6 RGB PNG: left half red, right half blue; resized (shorter side 6 -> 4) and centre-cropped
        var pixels: [UInt8] = []
        for _ in 0..<6 { for x in 0..<8 { pixels += x < 4 ? [255, 0, 0] : [0, 0, 255] } }
        try Image(width: 8, height: 6, channels: 3, pixels: pixels).writePNG(to: dir.appendingPathComponent("a.png"))
        let grey = [UInt8](repeating: 200, count: 16 * 16)
        let jpg = dir.appendingPathComponent("b.jpg")
        #expect(grey.withUnsafeBytes { stbi_write_jpg(jpg.path, 16, 16, 1, $0.baseAddress, 95) } != 0)
        try Data("notes".utf8).write(to: dir.appendingPathComponent("readme.txt"))  // ignored
        let d = try ImageDataset.load(dir.path, channels: 3, size: 4)
        #expect(d.count == 2 && d.channels == 3 && d.height == 4)
        #expect(d.pixels.pointer[0] > 0.9 && d.pixels.pointer[2 * 16] < -0.9)  // red in R, none in B at the left
        #expect(abs(d.pixels.pointer[16 * 3 + 5] - (200 / 127.5 - 1)) < 0.05)  // the JPEG's grey
    }

    @Test func badImageFolders() throws {
        let empty = temporaryDirectory()
        let e1 = #expect(throws: FormatError.self) { try ImageDataset.load(empty.path, channels: 3, size: 4) }
        #expect(e1?.description.contains("no images found") == true)
        let broken = temporaryDirectory()
        try Data("not an image".utf8).write(to: broken.appendingPathComponent("x.png"))
        let e2 = #expect(throws: FormatError.self) { try ImageDataset.load(broken.path, channels: 3, size: 4) }
        #expect(e2?.description.contains("x.png") == true && e2?.description.contains("cannot decode") == true)
        #expect(throws: FormatError.self) { try ImageDataset.load("/nonexistent/data", channels: 1, size: 4) }
    }

    /// Batches depend on (seed, index) only: a fresh sampler reproduces any batch.
    @Test func batchesAreAFunctionOfSeedAndIndex() throws {
        let dir = temporaryDirectory()
        try idx(10, 4, 4).write(to: dir.appendingPathComponent("train-images-idx3-ubyte"))
        let d = try ImageDataset.load(dir.path, channels: 1, size: 4)
        let a = BatchSampler(dataset: d, batchSize: 3, seed: 5, flip: true), b = BatchSampler(dataset: d, batchSize: 3, seed: 5, flip: true)
        #expect(a.batchesPerEpoch == 3)
        for k in [0, 2, 3, 7] {
            #expect(a.batch(k, permutation: a.permutation(epoch: k / 3)).images.scalars == b.batch(k, permutation: b.permutation(epoch: k / 3)).images.scalars)
        }
        #expect(a.permutation(epoch: 0) != a.permutation(epoch: 1))
        #expect(Set(a.permutation(epoch: 4)) == Set(0..<10))
        let prefetched = BatchPrefetcher(a, startingAt: 2)
        #expect(prefetched.nextBatch().images.scalars == a.batch(2, permutation: a.permutation(epoch: 0)).images.scalars)
        #expect(prefetched.nextBatch().images.scalars == a.batch(3, permutation: a.permutation(epoch: 1)).images.scalars)
    }
}
