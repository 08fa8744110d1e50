import Foundation
import Testing
import Tensors
import TestSupport

/// Data-parallel training over MPI (CI installs OpenMPI through scripts/setup, runs as root on two
/// cores: hence --allow-run-as-root --oversubscribe): the same steps as one process, to 1e-5.
@Suite(.serialized) struct DistributedTests {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// mpirun with `arguments` (MPMD `:` groups allowed), killed after `timeout` seconds: a hang
    /// fails the test instead of the CI run.
    func mpirun(_ arguments: [String], timeout: Double = 180) throws -> (status: Int32, out: String, err: String, seconds: Double) {
        let path = try #require(Self.mpirun, "mpirun not found: run scripts/setup (openmpi-bin)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--allow-run-as-root", "--oversubscribe"] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let began = Date()
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self),
                Date().timeIntervalSince(began))
    }

    func train(_ folder: URL, _ extra: [String] = [], steps: Int = 10) -> [String] {
        ["train", "--data", "fashion-mnist", "--preset", "tiny", "--steps", "\(steps)", "--batch-size", "64", "--seed", "3",
         "--checkpoint-every", "5", "--sample-every", "0", "--output", folder.path] + extra
    }

    /// The losses of log.csv and the raw weights of a run folder.
    func result(_ folder: URL) throws -> (losses: [Float], weights: [String: Tensor]) {
        let log = try String(contentsOf: folder.appendingPathComponent("training/log.csv"), encoding: .utf8)
        let losses = log.split(separator: "\n").dropFirst().compactMap { Float($0.split(separator: ",")[1]) }
        return (losses, try Safetensors.read(folder.appendingPathComponent("training/unet.safetensors")).tensors)
    }

    func expectSame(_ a: (losses: [Float], weights: [String: Tensor]), _ b: (losses: [Float], weights: [String: Tensor]), _ what: String) {
        #expect(a.losses.count == 10 && a.losses.count == b.losses.count, "\(what): \(a.losses.count) and \(b.losses.count) steps")
        for (x, y) in zip(a.losses, b.losses) { #expect(abs(x - y) <= 1e-5 * abs(y), "\(what): loss \(x) against \(y)") }
        let scale = b.weights.values.map { $0.scalars.map(abs).max()! }.max()!
        let worst = b.weights.map { name, w in zip(a.weights[name]!.scalars, w.scalars).map { abs($0 - $1) }.max()! }.max()!
        #expect(worst <= 1e-5 * scale, "\(what): weights differ by \(worst) (largest \(scale))")
    }

    /// 2 ranks x 32 images, 1 process x 64, and 1 x 64 in 2 micro-batches: the same 10 steps; every
    /// rank checks after every step that the ranks' weights agree (a checksum), or the job stops.
    @Test func twoRanksTakeTheStepsOfOneProcess() throws {
        let dir = temporaryDirectory()
        let one = dir.appendingPathComponent("one"), two = dir.appendingPathComponent("two"), micro = dir.appendingPathComponent("micro")
        for (folder, extra) in [(one, [String]()), (micro, ["--gradient-accumulation-steps", "2"])] {
            let r = try ddpm(train(folder, extra))
            #expect(r.status == 0, "\(r.err)")
        }
        let r = try mpirun(["-np", "2", ddpmBinary.path] + train(two))
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("over 2 processes (32 images each"), "\(r.err)")
        expectSame(try result(two), try result(one), "2 ranks")
        expectSame(try result(micro), try result(one), "2 micro-batches")
    }

    /// A 2-rank run stopped at step 5 and resumed by one process ends where one process ends.
    @Test func twoRanksResumeWithOne() throws {
        let dir = temporaryDirectory()
        let one = dir.appendingPathComponent("one"), mixed = dir.appendingPathComponent("mixed")
        #expect(try ddpm(train(one)).status == 0)
        let first = try mpirun(["-np", "2", ddpmBinary.path] + train(mixed, steps: 5))
        #expect(first.status == 0, "\(first.err)")
        let resumed = try ddpm(["train", "--data", "fashion-mnist", "--resume", "--steps", "10", "--output", mixed.path])
        #expect(resumed.status == 0, "\(resumed.err)")
        expectSame(try result(mixed), try result(one), "2 ranks then 1")
    }

    /// `mpirun -np 2 ddpm sample`: the ranks take alternate batches (skipping the others' draws)
    /// and rank 0 writes them in order: the file equals one process's, DDPM's draws and an uneven
    /// last batch included. The one process runs one thread, as each rank does, so
    /// that every batch is computed alike (BLAS blocks a product by threads, which moves the last
    /// digits). --noise is refused under mpirun.
    @Test func twoRanksSampleWhatOneProcessSamples() throws {
        let dir = temporaryDirectory()
        let tiny = fixtures.appendingPathComponent("tiny-pipeline").path
        let arguments = ["sample", "--model", tiny, "--sampler", "ddpm", "--steps", "4", "--count", "150", "--batch-size", "32", "--seed", "7"]
        let one = dir.appendingPathComponent("one.npy"), two = dir.appendingPathComponent("two.npy")
        #expect(try ddpm(arguments + ["--output", one.path], environment: ["DDPM_THREADS": "1"]).status == 0)
        let r = try mpirun(["-np", "2", "-x", "DDPM_THREADS=1", ddpmBinary.path] + arguments + ["--output", two.path])
        #expect(r.status == 0, "\(r.err)")
        #expect(maxAbsDifference(try NPY.readTensor(two), try NPY.readTensor(one)) <= 1e-6)
        let noise = dir.appendingPathComponent("noise.npy")
        try NPY.write(Tensor(zeros: [2, 1, 8, 8]), to: noise)
        let refused = try mpirun(["-np", "2", ddpmBinary.path, "sample", "--model", tiny, "--noise", noise.path, "--output",
                                  dir.appendingPathComponent("x.npy").path], timeout: 60)
        #expect(refused.status != 0 && refused.err.contains("--noise is not split"), "\(refused.err)")
    }

    /// `mpirun -np 2 ddpm evaluate`: for --fd the ranks draw alternate batches and rank 0 measures
    /// them (DDPM's draws, an uneven last batch); for --bpd they score alternate images and the
    /// shares are summed: the same figures as one process.
    @Test(arguments: [["--fd", "--count", "40", "--sampler", "ddpm", "--steps", "3", "--batch-size", "16"], ["--bpd", "--count", "2"]])
    func twoRanksEvaluateWhatOneProcessEvaluates(measure: [String]) throws {
        let arguments = ["evaluate", "--data", "fashion-mnist", "--json"] + measure
        let one = try ddpm(arguments), two = try mpirun(["-np", "2", ddpmBinary.path] + arguments)
        #expect(one.status == 0 && two.status == 0, "\(one.err) \(two.err)")
        func measures(_ json: String) -> [String] {
            json.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.contains("seconds") }
        }
        let lines = two.out.split(separator: "\n").filter { $0.hasPrefix("{") }
        #expect(lines.count == 1, "rank 0 alone prints: \(two.out)")
        #expect(measures(String(lines.first ?? "")) == measures(one.out.trimmingCharacters(in: .whitespacesAndNewlines)),
                "\(two.out) against \(one.out)")
    }

    /// A data path missing on one rank, or a rank that dies, ends the whole job with an error, not a hang.
    @Test func aFailingRankEndsTheJob() throws {
        let dir = temporaryDirectory()
        let missing = try mpirun(["-np", "1", ddpmBinary.path] + train(dir.appendingPathComponent("a"))
                                 + [":", "-np", "1", ddpmBinary.path] + train(dir.appendingPathComponent("a")).map { $0 == "fashion-mnist" ? "/nonexistent/data" : $0 },
                                 timeout: 120)
        #expect(missing.status != 0 && missing.seconds < 120, "status \(missing.status) after \(missing.seconds) s")
        #expect((missing.out + missing.err).contains("/nonexistent/data"), "\(missing.err)")
        let died = try mpirun(["-np", "1", ddpmBinary.path] + train(dir.appendingPathComponent("b"), steps: 1000) + [":", "-np", "1", "/bin/false"],
                              timeout: 120)
        #expect(died.status != 0 && died.seconds < 120, "status \(died.status) after \(died.seconds) s")
    }
}
