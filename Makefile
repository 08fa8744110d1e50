# swift-ddpm. `make sample` and `make test` install what they need, build, and run.
# Release builds throughout: numeric Swift in debug is 10-100x slower. On x86_64 with AVX2 and FMA
# the compiler targets Haswell (SwiftPM's default emits no AVX); these flags stay here, not in
# Package.swift, so the package remains usable as a dependency.
SWIFT_FLAGS := -c release
ifneq ($(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo yes),)
SWIFT_FLAGS += -Xswiftc -target-cpu -Xswiftc haswell
endif
DDPM := .build/release/ddpm

.PHONY: setup build test sample demo bench
setup:
	@scripts/setup

build: setup
	swift build $(SWIFT_FLAGS)

test: setup
	swift test $(SWIFT_FLAGS)

# the main job: 16 garments from the bundled Fashion-MNIST model, and their noise-to-image strip
sample: build
	$(DDPM) sample --sampler ddim --steps 50 --count 16 --output samples.png --progression progression.png

demo: build
	$(DDPM) demo

bench: build
	$(DDPM) bench --ops
