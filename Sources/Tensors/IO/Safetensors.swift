import Foundation

/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
/// mapping each tensor name to `dtype`, `shape` and `data_offsets` [begin, end) into the data that
/// follows, plus an optional `__metadata__` of strings. Reads F32, F16, BF16 (and F64), widening
/// to float32; writes F32 (or F16, for small bundled models).
public enum Safetensors {
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
        var size: Int { switch self { case .f32: 4; case .f16, .bf16: 2; case .f64: 8 } }
    }

    public struct Contents: @unchecked Sendable {
        public var tensors: [String: Tensor]
        public var metadata: [String: String]
        /// The stored type of each tensor.
        public var dtypes: [String: DType]
    }

    public static func read(_ url: URL) throws -> Contents {
        let data = try readFile(url)
        guard data.count >= 8 else { throw FormatError(url, "file of \(data.count) bytes is too short for a safetensors header") }
        let headerLength = data.littleEndian(UInt64.self, at: 0)
        guard headerLength <= UInt64(data.count - 8) else {
            throw FormatError(url, "header length \(headerLength) runs past the end of the file (\(data.count) bytes): truncated or not safetensors")
        }
        let dataStart = 8 + Int(headerLength)
        let headerBytes = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + dataStart))
        guard let json = try? JSONSerialization.jsonObject(with: headerBytes), let header = json as? [String: Any] else {
            throw FormatError(url, "header is not a JSON object")
        }
        let dataSize = data.count - dataStart
        var contents = Contents(tensors: [:], metadata: [:], dtypes: [:])
        if let meta = header["__metadata__"] {
            guard let m = meta as? [String: String] else { throw FormatError(url, "__metadata__ is not a map of strings") }
            contents.metadata = m
        }
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any], let offsetsAny = entry["data_offsets"] as? [Any] else {
                throw FormatError(url, "tensor '\(name)': entry needs dtype, shape and data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw FormatError(url, "tensor '\(name)': unsupported dtype \(dtypeName) (supported: F32, F16, BF16, F64)")
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offsets = offsetsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw FormatError(url, "tensor '\(name)': shape \(shapeAny) is not a list of non-negative integers")
            }
            guard offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataSize else {
                throw FormatError(url, "tensor '\(name)': data_offsets \(offsetsAny) out of range (data is \(dataSize) bytes)")
            }
            guard let count = checkedProduct(shape), let bytes = checkedProduct([count, dtype.size]),
                  offsets[1] - offsets[0] == bytes else {
                let needs = checkedProduct(shape).flatMap { checkedProduct([$0, dtype.size]) }.map { "\($0) bytes" } ?? "more bytes than an Int counts"
                throw FormatError(url, "tensor '\(name)': shape \(shape) of \(dtypeName) needs \(needs), offsets give \(offsets[1] - offsets[0])")
            }
            let storage = Storage(uninitializedCount: count)
            data.withUnsafeBytes { raw in
                let p = raw.baseAddress! + dataStart + offsets[0]
                let out = storage.pointer
                switch dtype {
                case .f32:
                    for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case .f16:
                    for i in 0..<count { out[i] = Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
                case .bf16:
                    for i in 0..<count { out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
                case .f64:
                    for i in 0..<count { out[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
                }
            }
            contents.tensors[name] = Tensor(shape: shape, storage: storage)
            contents.dtypes[name] = dtype
        }
        return contents
    }

    /// The bytes of a safetensors file holding `tensors` (sorted by name) as `dtype` (F32 or F16).
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:], dtype: DType = .f32) -> Data {
        require(dtype == .f32 || dtype == .f16, "safetensors: write F32 or F16")
        let names = tensors.keys.sorted()
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + t.count * dtype.size]] as [String: Any]
            offset += t.count * dtype.size
        }
        var headerData = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        headerData.append(contentsOf: Array(repeating: UInt8(ascii: " "), count: (8 - headerData.count % 8) % 8))
        var data = Data(capacity: 8 + headerData.count + offset)
        withUnsafeBytes(of: UInt64(headerData.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(headerData)
        for name in names {
            let t = tensors[name]!
            if dtype == .f32 {
                data.append(UnsafeBufferPointer(start: UnsafeRawPointer(t.pointer).assumingMemoryBound(to: UInt8.self), count: 4 * t.count))
            } else {
                var half = [UInt16](repeating: 0, count: t.count)
                for i in 0..<t.count { half[i] = Float16(t.pointer[i]).bitPattern.littleEndian }
                half.withUnsafeBytes { data.append(contentsOf: $0) }
            }
        }
        return data
    }

    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:],
                             dtype: DType = .f32, to url: URL) throws {
        try writeAtomically(encode(tensors, metadata: metadata, dtype: dtype), to: url)
    }
}
