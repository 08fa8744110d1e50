// swift-tools-version: 6.0
// swift-ddpm: denoising diffusion probabilistic models in Swift.
//
// Modules, imports pointing down only:
//   ddpm (CLI) -> Diffusion -> Layers, Datasets -> Tensors -> CKernels (and CPNG, CZlib, CSTB under Datasets)
//   ddpm (CLI) -> Distributed -> CMPI (OpenMPI; only the command line spreads work over processes)
// No build flags anywhere: a manifest with unsafeFlags cannot be used as a versioned dependency, so
// speed comes from CKernels, whose kernels are compiled for several instruction sets and picked at
// run time from the CPU.
import PackageDescription

let package = Package(
    name: "swift-ddpm",
    products: [
        .executable(name: "ddpm", targets: ["ddpm"]),
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "Layers", targets: ["Layers"]),
        .library(name: "Datasets", targets: ["Datasets"]),
        .library(name: "Diffusion", targets: ["Diffusion"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // kernels per instruction set, and OpenBLAS loaded at run time (dlopen) with the best core
        .target(name: "CKernels", linkerSettings: [.linkedLibrary("dl", .when(platforms: [.linux]))]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .target(name: "Tensors", dependencies: ["CKernels"]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSTB", path: "Sources/CSTB", pkgConfig: "stb", providers: [.apt(["libstb-dev"])]),
        .target(name: "Datasets", dependencies: ["Tensors", "CPNG", "CZlib", "CSTB"]),
        .target(name: "Layers", dependencies: ["Tensors"]),
        .target(name: "Diffusion", dependencies: ["Layers", "Datasets", "Tensors"]),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "Distributed", dependencies: ["CMPI"]),
        .executableTarget(name: "ddpm", dependencies: [
            "Diffusion", "Datasets", "Distributed", "Layers", "Tensors",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TestSupport", dependencies: ["Tensors"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "TestSupport", "CKernels"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "Tensors", "TestSupport"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "Datasets", "Layers", "Tensors", "TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Tensors", "TestSupport", "CSTB"]),
        .testTarget(name: "CLITests", dependencies: ["Diffusion", "Tensors", "TestSupport", "ddpm"]),
    ]
)
