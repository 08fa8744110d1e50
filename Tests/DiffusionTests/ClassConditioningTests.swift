import Datasets
import Diffusion
import Foundation
import Layers
import Testing
import Tensors
import TestSupport

@Suite struct ClassConditioningTests {
    /// diffusers' class-conditional forward pass, both embedding types that take integer labels:
    /// `unet(x, t, class_labels=y)` with the null label among them (fixtures made by
    /// Tests/Fixtures/make_class_conditional.py).
    @Test(arguments: ["tiny-class-table", "tiny-class-timestep"])
    func forwardMatchesDiffusers(folder: String) throws {
        let dir = fixtures.appendingPathComponent(folder)
        let pipeline = try Pipeline.load(dir)
        #expect(pipeline.classNames == ["circle", "square", "triangle"])
        #expect(pipeline.unet.config.nullClassLabel == 3 && pipeline.classCount == 3)
        let x = try NPY.readTensor(dir.appendingPathComponent("forward_input.npy"))
        let t = try NPY.read(dir.appendingPathComponent("forward_timesteps.npy")).values.map { Float($0) }
        let labels = try NPY.read(dir.appendingPathComponent("forward_class_labels.npy")).values.map { Int($0) }
        let expected = try NPY.readTensor(dir.appendingPathComponent("forward_output.npy"))
        let out = withoutGradients { pipeline.unet(x, timesteps: t, classLabels: labels) }
        #expect(maxAbsDifference(out, expected) < 1e-4, "max difference \(maxAbsDifference(out, expected))")
        // the label matters: another label gives another output
        let other = withoutGradients { pipeline.unet(x, timesteps: t, classLabels: labels.map { ($0 + 1) % 4 }) }
        #expect(maxAbsDifference(other, expected) > 1e-3)

        // saved and loaded again: the same config keys, names and outputs
        let copy = temporaryDirectory().appendingPathComponent("copy")
        try pipeline.save(to: copy)
        let loaded = try Pipeline.load(copy)
        #expect(loaded.classNames == pipeline.classNames && loaded.unet.config == pipeline.unet.config)
        let again = withoutGradients { loaded.unet(x, timesteps: t, classLabels: labels) }
        #expect(maxAbsDifference(again, out) == 0)
        let json = try String(contentsOf: copy.appendingPathComponent("unet/config.json"), encoding: .utf8)
        #expect(json.contains("\"num_class_embeds\" : 4"))
    }

    @Test func unsupportedOrInconsistentConfigsAreRefused() throws {
        func config(_ extra: String) -> Data {
            let blocks = #""down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]"#
            return Data(#"{"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16], "norm_num_groups": 4, "#
                        .appending(blocks + ", " + extra + "}").utf8)
        }
        let url = URL(fileURLWithPath: "/x/config.json")
        for (extra, message) in [("\"class_embed_type\": \"identity\"", "'class_embed_type' 'identity' is not supported"),
                                 ("\"class_embed_type\": \"projection\"", "'class_embed_type' 'projection' is not supported"),
                                 ("\"num_class_embeds\": 0", "'num_class_embeds' must be positive")] {
            let error = #expect(throws: ConfigError.self) { try UNetConfig(json: config(extra), source: url) }
            #expect(error?.description.contains(message) == true, "\(error?.description ?? "")")
        }
        // id2label naming more classes than the table holds
        let dir = temporaryDirectory().appendingPathComponent("model")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tiny-class-table"), to: dir)
        let index = dir.appendingPathComponent("model_index.json")
        let text = try String(contentsOf: index, encoding: .utf8).replacingOccurrences(of: "\"2\": \"triangle\"", with: "\"2\": \"triangle\", \"3\": \"star\"")
        try text.write(to: index, atomically: true, encoding: .utf8)
        let error = #expect(throws: ConfigError.self) { try Pipeline.load(dir) }
        #expect(error?.description.contains("'id2label' names 4 classes") == true, "\(error?.description ?? "")")
    }

    /// A conditional 2-D toy: an MLP denoiser of (x, t, class embedding), each of 8 classes one mode
    /// of a Gaussian mixture (radius 2, std 0.05), trained with label dropout 0.2 and sampled by
    /// DDPM ancestral steps through the library's guidance rule. With its label, 95% of samples land
    /// within 0.3 of that class's mode; with the null label, samples cover every mode.
    @Test func conditionalToyFollowsItsLabel() {
        var config = SchedulerConfig()
        config.numTrainTimesteps = 200; config.betaSchedule = .cosine; config.clipSample = false
        let schedule = NoiseSchedule(config)
        let centres: [(Float, Float)] = (0..<8).map { k in
            let angle = Double(k) * Double.pi / 4
            return (Float(2 * cos(angle)), Float(2 * sin(angle)))
        }
        let null = 8
        var rng = RandomGenerator(seed: 12)
        let classes = Embedding(count: 9, dimension: 16, using: &rng)
        let net = MLP(widths: [2 + 16 + 16, 128, 128, 128, 2], using: &rng)
        let optimizer = AdamW(parameters: net.parameterTensors + classes.parameterTensors, learningRate: 2e-3, weightDecay: 0)
        func predict(_ x: Tensor, _ t: [Int], _ labels: [Int]) -> Tensor {
            let time = timestepEmbedding(t.map(Float.init), dimension: 16, flipSinToCos: true, downscaleFreqShift: 0)
            return net(concatChannels([x, time, classes(labels)]))
        }
        let batch = 512
        for _ in 0..<3000 {
            var points: [Float] = [], labels: [Int] = []
            for _ in 0..<batch {
                let k = rng.integer(below: 8)
                points += [centres[k].0 + 0.05 * rng.normal(), centres[k].1 + 0.05 * rng.normal()]
                labels.append(rng.uniform() < 0.2 ? null : k)
            }
            let x0 = Tensor(shape: [batch, 2], points)
            let t = (0..<batch).map { _ in rng.integer(below: schedule.count) }
            let noise = Tensor.randomNormal([batch, 2], using: &rng)
            net.zeroGradients(); classes.zeroGradients()
            meanSquaredError(predict(schedule.addNoise(x0, noise: noise, timesteps: t), t, labels), noise).backward()
            optimizer.update()
        }
        func sample(_ labels: [Int], guidance: Float) -> [Int?] {
            var scheduler = DDPMScheduler(config: config)
            let n = labels.count
            var x = Tensor.randomNormal([n, 2], using: &rng)
            for (i, t) in scheduler.timesteps.enumerated() {
                let times = Array(repeating: Int(t), count: 2 * n)
                let both = withoutGradients { predict(Tensor.joined([x, x]), times, labels + Array(repeating: null, count: n)) }
                let eps = classifierFreeGuidance(conditional: both.slice(0..<n), unconditional: both.slice(n..<(2 * n)), scale: guidance)
                x = scheduler.step(eps, index: i, sample: x, using: &rng).previousSample
            }
            return (0..<n).map { i in
                let (px, py) = (x.pointer[2 * i], x.pointer[2 * i + 1])
                let d: [Float] = centres.map { c in hypotf(px - c.0, py - c.1) }
                let k = d.indices.min { d[$0] < d[$1] }!
                return d[k] < 0.3 ? k : nil
            }
        }
        let n = 800
        let labels = (0..<n).map { $0 % 8 }
        let hits = zip(sample(labels, guidance: 1), labels).filter { $0 == $1 }.count
        let unconditional = sample(Array(repeating: null, count: n), guidance: 1)
        let counts = (0..<8).map { k in unconditional.filter { $0 == k }.count }
        print("conditional 2-D toy: \(hits) of \(n) samples at their label's mode; with the null label per mode \(counts)")
        #expect(Double(hits) / Double(n) >= 0.95, "\(hits) of \(n)")
        #expect(counts.allSatisfy { $0 >= n / 40 }, "\(counts)")
    }
}
