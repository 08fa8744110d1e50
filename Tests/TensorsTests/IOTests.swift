import Foundation
import Testing
import Tensors
import TestSupport

@Suite struct IOTests {
    @Test func npyRoundTrip() throws {
        let dir = temporaryDirectory()
        let t = randomTensor([2, 3, 4], seed: 1)
        let url = dir.appendingPathComponent("a.npy")
        try NPY.write(t, to: url)
        let back = try NPY.readTensor(url)
        #expect(back.shape == [2, 3, 4])
        #expect(back.scalars == t.scalars)
        let ints = dir.appendingPathComponent("i.npy")
        try NPY.encode(shape: [3], int64: [5, -1, 999]).write(to: ints)
        let a = try NPY.read(ints)
        #expect(a.element == .int64 && a.values == [5, -1, 999] && a.shape == [3])
    }

    @Test func npyReadsReferenceFixtures() throws {
        let t = try NPY.read(fixtures.appendingPathComponent("tiny-pipeline/ddim_timesteps.npy"))
        #expect(t.element == .int64 && t.shape == [10])
        #expect(t.values.first == 900 && t.values.last == 0)
        let x = try NPY.read(fixtures.appendingPathComponent("tiny-pipeline/forward_input.npy"))
        #expect(x.element == .float32 && x.shape == [2, 1, 8, 8])
    }

    @Test func safetensorsRoundTrip() throws {
        let dir = temporaryDirectory()
        let tensors = ["b.weight": randomTensor([3, 2], seed: 2), "a": randomTensor([5], seed: 3), "empty": Tensor(zeros: [0])]
        let url = dir.appendingPathComponent("m.safetensors")
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: url)
        let back = try Safetensors.read(url)
        #expect(back.metadata == ["format": "pt"])
        #expect(Set(back.tensors.keys) == Set(tensors.keys))
        for (k, v) in tensors { #expect(back.tensors[k]!.shape == v.shape && back.tensors[k]!.scalars == v.scalars) }
        // float16: values round to half precision
        try Safetensors.write(tensors, dtype: .f16, to: url)
        let half = try Safetensors.read(url)
        #expect(half.dtypes["a"] == .f16)
        #expect(maxAbsDifference(half.tensors["a"]!, tensors["a"]!) < 2e-3)
    }

    /// BF16 is the upper half of a float32's bits; values exact in bfloat16 come back exactly.
    @Test func readsBFloat16() throws {
        let values: [Float] = [1, -2.5, 0.15625, 3e38]
        var payload = Data()
        for v in values { withUnsafeBytes(of: UInt16(v.bitPattern >> 16).littleEndian) { payload.append(contentsOf: $0) } }
        var header = Data(#"{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#.utf8)
        header.append(contentsOf: Array(repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
        var file = Data()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { file.append(contentsOf: $0) }
        let url = temporaryDirectory().appendingPathComponent("bf16.safetensors")
        try (file + header + payload).write(to: url)
        let c = try Safetensors.read(url)
        #expect(c.dtypes["w"] == .bf16 && c.tensors["w"]!.shape == [2, 2])
        let expected = values.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) }
        #expect(c.tensors["w"]!.scalars == expected)
    }

    /// The peer's own file: every tensor with diffusers' names and shapes, values spot-checked
    /// against the numbers NumPy reads from the same bytes.
    @Test func readsDiffusersSafetensors() throws {
        let c = try Safetensors.read(fixtures.appendingPathComponent("tiny-pipeline/unet/diffusion_pytorch_model.safetensors"))
        #expect(c.tensors.count == 144)
        #expect(c.metadata == ["format": "pt"])
        let expected: [(String, [Int], [Float], Float)] = [
            ("conv_in.weight", [8, 1, 3, 3], [-0.33506813645362854, -0.00016164034605026245, -0.2030036598443985], -0.1516495943069458),
            ("down_blocks.1.attentions.0.to_q.weight", [16, 16], [0.05083835870027542, -0.03949287533760071, -0.14800330996513367], 0.053719550371170044),
            ("time_embedding.linear_1.bias", [32], [0.2696622312068939, 0.2638649642467499, -0.218309685587883], -0.3322462737560272),
            ("up_blocks.0.resnets.1.conv_shortcut.weight", [16, 24, 1, 1], [0.19949474930763245, 0.08951672911643982, 0.12490963935852051], -0.029374461621046066),
        ]
        for (name, shape, first, last) in expected {
            let t = try #require(c.tensors[name])
            #expect(t.shape == shape)
            #expect(Array(t.scalars.prefix(3)) == first)
            #expect(t.scalars.last == last)
        }
    }

    /// Corrupt files throw a FormatError naming the file, never crash.
    @Test func corruptFilesThrow() throws {
        let dir = temporaryDirectory()
        let good = Safetensors.encode(["w": randomTensor([4, 4], seed: 4)])
        let headerLength = Int(good.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        func header(_ json: String, data: Int = 64) -> Data {
            var d = Data()
            withUnsafeBytes(of: UInt64(json.utf8.count).littleEndian) { d.append(contentsOf: $0) }
            d.append(contentsOf: Array(json.utf8))
            d.append(Data(count: data))
            return d
        }
        let cases: [(String, Data, String)] = [
            ("truncated", good.prefix(good.count - 10), "out of range"),
            ("tiny", Data([1, 2, 3]), "too short"),
            ("header-past-end", good.prefix(8 + headerLength / 2), "runs past"),
            ("not-json", header("{this is not json}"), "not a JSON"),
            ("bad-offsets", header(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,640]}}"#), "out of range"),
            ("negative-offsets", header(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#), "out of range"),
            ("unknown-dtype", header(#"{"w":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}}"#), "unsupported dtype"),
            ("bad-shape", header(#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#), "shape"),
            ("missing-fields", header(#"{"w":{"dtype":"F32"}}"#), "needs dtype"),
            // headers promising more elements than an Int counts: refused, not trapped on
            ("overflowing-shape", header(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#),
             "more bytes than an Int counts"),
            ("overflowing-bytes", header(#"{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,16]}}"#),
             "more bytes than an Int counts"),
        ]
        for (name, data, message) in cases {
            let url = dir.appendingPathComponent("\(name).safetensors")
            try data.write(to: url)
            let error = #expect(throws: FormatError.self) { try Safetensors.read(url) }
            #expect(error?.description.contains(url.path) == true, "\(name)")
            #expect(error?.description.contains(message) == true, "\(name): \(error?.description ?? "")")
        }
        let npy = NPY.encode(shape: [2, 3], float32: [1, 2, 3, 4, 5, 6])
        let npyCases: [(String, Data, String)] = [
            ("truncated", npy.prefix(npy.count - 4), "needs 24 bytes"),
            ("no-magic", Data("hello world, not numpy".utf8), "magic"),
            ("header-past-end", npy.prefix(20), "runs past"),
            ("dtype", replacing(npy, "<f4", with: "<c8"), "unsupported dtype"),
            ("overflowing-shape", replacing(npy, "(2, 3)", with: "(4294967296, 4294967296)"), "more than an Int counts"),
        ]
        for (name, data, message) in npyCases {
            let url = dir.appendingPathComponent("\(name).npy")
            try data.write(to: url)
            let error = #expect(throws: FormatError.self) { try NPY.read(url) }
            #expect(error?.description.contains(message) == true, "\(name): \(error?.description ?? "")")
        }
    }

    func replacing(_ data: Data, _ old: String, with new: String) -> Data {
        var d = data
        let r = d.range(of: Data(old.utf8))!
        d.replaceSubrange(r, with: Data(new.utf8))
        return d
    }

    @Test func missingFileThrows() {
        #expect(throws: FormatError.self) { try NPY.read(URL(fileURLWithPath: "/nonexistent/x.npy")) }
    }
}
