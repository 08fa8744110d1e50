import Datasets
import Diffusion
import Foundation
import Layers
import Tensors

/// One libFuzzer entry for every reader of files that users hand swift-ddpm; DDPM_FUZZ_TARGET
/// picks the reader. Each input is written to a file (the readers take paths, as the CLI does)
/// under a scratch folder in /dev/shm and read back. A thrown error is the right answer to a bad
/// file; a crash, a hang or an allocation beyond the limit is a bug. What a reader accepts must
/// also be what it promises: finite floats, dataset values in [-1, 1], labels in range.
enum Target: String, CaseIterable {
    case safetensors, npy, idx, cifar10, image, unetConfig = "unet-config", schedulerConfig = "scheduler-config"
    case modelIndex = "model-index", trainingState = "training-state"

    /// The file name the reader sees (its extension or its place in a folder matters).
    var fileName: String {
        switch self {
        case .safetensors: "x.safetensors"
        case .npy: "x.npy"
        case .idx: "x-idx3-ubyte"
        case .cifar10: "data_batch_1.bin"
        case .image: "x.img"
        case .unetConfig: "config.json"
        case .schedulerConfig: "scheduler_config.json"
        case .modelIndex: "model_index.json"
        case .trainingState: "training/state.json"
        }
    }

    func run(_ file: URL, in folder: URL) {
        switch self {
        case .safetensors:
            guard let contents = try? Safetensors.read(file) else { return }
            for (_, t) in contents.tensors { precondition(t.count == t.shape.reduce(1, *)) }
        case .npy:
            _ = try? NPY.read(file)
            if let t = try? NPY.readTensor(file) { precondition(t.count == t.shape.reduce(1, *)) }
            if let set = try? ImageDataset.npy(file) { checkDataset(set) }
        case .idx:
            if let set = try? ImageDataset.idx(file) { checkDataset(set) }
            _ = try? ImageDataset.idxLabels(file)
        case .cifar10:
            if let set = try? ImageDataset.cifar10(folder, files: [fileName]) { checkDataset(set) }
        case .image:
            // the two decoders the CLI calls: libpng for --image and stb_image for data folders
            if let image = try? Image.readPNG(file) { precondition(image.pixels.count == image.width * image.height * image.channels) }
            for name in ["x.png", "x.jpg"] {
                let copy = folder.appendingPathComponent("images").appendingPathComponent(name)
                try? FileManager.default.removeItem(at: copy)
                try? FileManager.default.copyItem(at: file, to: copy)
                if let set = try? ImageDataset.imageFolder(copy.deletingLastPathComponent(), names: [name], channels: 3, size: 8) {
                    checkDataset(set)
                }
                try? FileManager.default.removeItem(at: copy)
            }
        case .unetConfig:
            guard let config = try? UNetConfig.load(file) else { return }
            // a config that validates is one we can build: small ones are built here
            if config.parameters < 2_000_000 {
                var rng = RandomGenerator(seed: 0)
                _ = UNet2DModel(config: config, using: &rng)
            }
        case .schedulerConfig:
            guard let config = try? SchedulerConfig.load(file) else { return }
            for kind in Pipeline.SamplerKind.allCases { _ = try? config.converted(to: kind.className) }
        case .modelIndex:
            _ = try? Pipeline.load(folder)
        case .trainingState:
            _ = try? Trainer.savedDataSource(in: folder)
        }
    }

    func checkDataset(_ set: ImageDataset) {
        precondition(set.count > 0)
        let x = set.images(0..<min(set.count, 4))
        for i in 0..<x.count { precondition(abs(x.pointer[i]) <= 1.0001, "dataset value \(x.pointer[i])") }
        if let labels = set.labels { precondition(labels.values.allSatisfy { $0 >= 0 && $0 < labels.names.count }) }
    }
}

let target: Target = {
    guard let name = ProcessInfo.processInfo.environment["DDPM_FUZZ_TARGET"], let t = Target(rawValue: name) else {
        fatalError("set DDPM_FUZZ_TARGET to one of " + Target.allCases.map(\.rawValue).joined(separator: ", "))
    }
    return t
}()

/// A scratch folder per process; the model-index target gets the tiny pipeline's unet and scheduler beside it.
let scratch: URL = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
    let folder = base.appendingPathComponent("ddpm-fuzz-\(target.rawValue)-\(getpid())")
    try? FileManager.default.createDirectory(at: folder.appendingPathComponent("training"), withIntermediateDirectories: true)
    try? FileManager.default.createDirectory(at: folder.appendingPathComponent("images"), withIntermediateDirectories: true)
    if target == .modelIndex, let fixtures = ProcessInfo.processInfo.environment["DDPM_FUZZ_FIXTURE"] {
        for part in ["unet", "scheduler"] {
            try? FileManager.default.copyItem(at: URL(fileURLWithPath: fixtures).appendingPathComponent(part),
                                              to: folder.appendingPathComponent(part))
        }
    }
    return folder
}()

/// One input: written to the target's file, read back.
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let file = scratch.appendingPathComponent(target.fileName)
    try? Data(bytes: data ?? UnsafePointer(bitPattern: 1)!, count: size).write(to: file)
    target.run(file, in: scratch)
    return 0
}
