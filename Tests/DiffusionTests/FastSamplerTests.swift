import Foundation
import Testing
import Tensors
import TestSupport
@testable import Diffusion

/// DPM-Solver++, Euler, Euler ancestral and Heun: full loops on the tiny pipeline's U-Net from
/// fixed noise against diffusers 0.42's (Tests/Fixtures/make_fast_samplers.py), for 10 and 25
/// steps, with and without Karras sigmas, epsilon and v prediction, configs made from the folder's
/// DDPM config (from_config) and from each class's defaults.
@Suite struct FastSamplerTests {
    static let loops = try! Safetensors.read(fixtures.appendingPathComponent("fast-samplers/loops.safetensors")).tensors
    static let cases = loops.keys.filter { $0.hasSuffix("/sample") }.map { String($0.dropLast(7)) }.sorted()

    @Test(arguments: cases)
    func loopMatchesDiffusers(_ name: String) throws {
        let parts = name.split(separator: "_").map(String.init)  // sampler, source, steps, karras|plain, prediction
        let kind = try #require(Pipeline.SamplerKind(rawValue: parts[0]))
        let steps = Int(parts[2])!, karras = parts[3] == "karras"
        let prediction = try #require(SchedulerConfig.PredictionType(rawValue: parts[4...].joined(separator: "_")))
        let pipeline = try Pipeline.load(fixtures.appendingPathComponent("tiny-pipeline"))
        var scheduler: any Scheduler
        if parts[1] == "folder" {
            pipeline.schedulerConfig.predictionType = prediction
            scheduler = try pipeline.scheduler(kind, steps: steps, karras: karras ? true : nil)
        } else {
            var config = SchedulerConfig(className: kind.className)
            config.predictionType = prediction
            config.useKarrasSigmas = karras
            scheduler = try kind.make(config)
            try scheduler.setTimesteps(steps)
        }
        let expected = Self.loops
        let timesteps = try #require(expected[name + "/timesteps"]).scalars
        #expect(scheduler.timesteps.count == timesteps.count)
        #expect(zip(scheduler.timesteps, timesteps).allSatisfy { abs($0 - $1) < 1e-3 }, "\(scheduler.timesteps) against \(timesteps)")
        #expect(abs(scheduler.initNoiseSigma - expected[name + "/init_noise_sigma"]!.item) <= 1e-5 * scheduler.initNoiseSigma)

        let drawn = expected[name + "/drawn"]
        var x = expected["noise"]! * scheduler.initNoiseSigma
        for (i, t) in scheduler.timesteps.enumerated() {
            let output = withoutGradients { pipeline.unet(scheduler.scaleModelInput(x, index: i), timesteps: [t, t]) }
            let noise = scheduler.needsNoise(index: i) ? drawn.map { $0.slice(i..<(i + 1)).reshaped(x.shape) } : nil
            x = scheduler.step(output, index: i, sample: x, noise: noise).previousSample
        }
        let reference = expected[name + "/sample"]!
        let worst = zip(x.scalars, reference.scalars).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-3, "\(name): largest difference \(worst)")
    }

    /// diffusers' DPM-Solver++ folder (with Python's bare -Infinity) and Euler folder load, keep
    /// their class and keys, and write them back in diffusers' words.
    @Test func diffusersSchedulerFoldersRoundTrip() throws {
        let dpm = try SchedulerConfig.load(fixtures.appendingPathComponent("fast-samplers/dpm-scheduler/scheduler_config.json"))
        #expect(dpm.className == "DPMSolverMultistepScheduler" && dpm.lambdaMinClipped == -.infinity && dpm.timestepSpacing == .leading)
        let text = String(decoding: dpm.json(), as: UTF8.self)
        #expect(text.contains("\"lambda_min_clipped\" : -Infinity") && !text.contains("set_alpha_to_one"), "\(text)")
        #expect(try SchedulerConfig(json: dpm.json(), source: URL(fileURLWithPath: "x")).json() == dpm.json())
        let euler = try SchedulerConfig.load(fixtures.appendingPathComponent("fast-samplers/euler-scheduler/scheduler_config.json"))
        #expect(euler.className == "EulerDiscreteScheduler" && euler.useKarrasSigmas && euler.timestepSpacing == .linspace && !euler.clipSample)
        #expect(Pipeline.SamplerKind(className: euler.className) == .euler)
    }

    /// As diffusers' from_config: a key the DDPM file holds carries over to another class; a key it
    /// leaves out (or marks in _use_default_values) takes the new class's default.
    @Test func anotherClassFromAConfig() throws {
        func dpm(_ json: String) throws -> SchedulerConfig {
            try SchedulerConfig(json: Data(json.utf8), source: URL(fileURLWithPath: "s.json")).converted(to: "DPMSolverMultistepScheduler")
        }
        #expect(try dpm(#"{"_class_name": "DDPMScheduler", "timestep_spacing": "leading"}"#).timestepSpacing == .leading)
        #expect(try dpm(#"{"_class_name": "DDPMScheduler", "beta_schedule": "linear"}"#).timestepSpacing == .linspace)
        #expect(try dpm(#"{"_class_name": "DDPMScheduler", "timestep_spacing": "leading", "_use_default_values": ["timestep_spacing"]}"#)
            .timestepSpacing == .linspace)
        #expect(try dpm(#"{"_class_name": "DDPMScheduler", "clip_sample": true}"#).className == "DPMSolverMultistepScheduler")
    }

    /// Karras sigmas on the cosine schedule map several sigmas to one timestep (diffusers' DPM-Solver++
    /// then runs off its list: IndexError); counting steps instead, every step runs.
    @Test func repeatedTimestepsJustWork() throws {
        var config = SchedulerConfig(className: "DPMSolverMultistepScheduler")
        config.betaSchedule = .cosine
        config.useKarrasSigmas = true
        var s = try DPMSolverScheduler(config: config)
        try s.setTimesteps(12)
        // diffusers lists 998 five times (the first may round to 999 here: the last bit of a log decides)
        #expect(s.timesteps.filter { $0 == 998 }.count >= 4, "\(s.timesteps)")
        var rng = RandomGenerator(seed: 1)
        var x = Tensor.randomNormal([1, 1, 4, 4], using: &rng)
        for i in s.timesteps.indices { x = s.step(x * 0.1, index: i, sample: x, noise: nil).previousSample }
        #expect(x.scalars.allSatisfy { $0.isFinite })
    }

    /// The config keys we do not compute are refused by name.
    @Test func unsupportedVariantsAreRefused() throws {
        for (key, value) in [("algorithm_type", "\"sde-dpmsolver++\""), ("use_exponential_sigmas", "true"), ("interpolation_type", "\"log_linear\""),
                             ("solver_order", "3")] {
            let json = Data("{\"_class_name\": \"DPMSolverMultistepScheduler\", \"\(key)\": \(value)}".utf8)
            do { _ = try SchedulerConfig(json: json, source: URL(fileURLWithPath: "s.json")) } catch {
                #expect("\(error)".contains(key), "\(error)")
            }
        }
    }
}
