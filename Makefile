# swift-ddpm. `make sample` and `make test` install what they need, build, and run.
# Release builds throughout: numeric Swift in debug is 10-100x slower. No other flags: the hot
# kernels are compiled for AVX-512, AVX2 + FMA and portable C and picked at run time from the CPU,
# so this build is exactly what a package that depends on swift-ddpm gets.
SWIFT_FLAGS := -c release
DDPM := .build/release/ddpm

.PHONY: setup build test test-avx512-emulated test-qemu crash-test fuzz sample demo bench speed-report info
setup:
	@scripts/setup

build: setup
	swift build $(SWIFT_FLAGS)

# every kernel set: where the CPU has no AVX-512, a second build tests that set emulated on AVX2
test: setup
	swift test $(SWIFT_FLAGS)
	@if grep -q -w avx2 /proc/cpuinfo 2>/dev/null && grep -q -w fma /proc/cpuinfo && ! grep -q -w avx512f /proc/cpuinfo; then \
	  scripts/test-avx512-emulated; \
	else echo "test: no emulated AVX-512 run (the CPU runs that set itself, or has no AVX2 + FMA to emulate it on)"; fi

test-avx512-emulated: setup
	scripts/test-avx512-emulated

# the built binary on an emulated CPU without AVX (Nehalem), against the native run: slow, not in `make test`
test-qemu: build
	scripts/test-qemu

# kill -9 a training run 50 times at random moments; every resume must end bit for bit as an uninterrupted run
crash-test: build
	scripts/crash-test 50

# libFuzzer on every file reader, FUZZ_SECONDS each (findings in .build-fuzz/findings): slow, not in `make test`
FUZZ_SECONDS ?= 60
fuzz: setup
	scripts/fuzz $(FUZZ_SECONDS)

# the main job: six garments of each class from the bundled Fashion-MNIST model (guidance 3), and a noise-to-image strip
sample: build
	$(DDPM) sample --sampler ddim --steps 50 --count 60 --guidance-scale 3 --output samples.png --progression progression.png

demo: build
	$(DDPM) demo

bench: build
	$(DDPM) bench --ops

# the README's Speed rows for this CPU: against PyTorch and diffusers (installed into .venv-bench), about 15 minutes
speed-report: build
	scripts/speed-report

info: build
	$(DDPM) info
