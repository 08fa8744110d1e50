// swift-tools-version: 6.0
// libFuzzer targets for swift-ddpm's parsers, in a package of their own so that the library's
// build stays flag-free: `make fuzz` (scripts/fuzz) builds this with
//   swift build -c release -Xswiftc -sanitize=fuzzer,address
// and runs one binary per target (DDPM_FUZZ_TARGET), seeded from seeds/<target>.
import PackageDescription

let package = Package(
    name: "swift-ddpm-fuzz",
    dependencies: [.package(name: "swift-ddpm", path: "..")],
    targets: [
        .executableTarget(name: "ddpm-fuzz", dependencies: [
            .product(name: "Tensors", package: "swift-ddpm"),
            .product(name: "Datasets", package: "swift-ddpm"),
            .product(name: "Layers", package: "swift-ddpm"),
            .product(name: "Diffusion", package: "swift-ddpm"),
        ]),
    ]
)
