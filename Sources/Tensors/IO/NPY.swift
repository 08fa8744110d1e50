import Foundation

/// NumPy's `.npy` format, version 1.0 to 3.0: the magic "\x93NUMPY", two version bytes, a
/// little-endian header length (2 bytes in 1.0, 4 after), a Python-literal dict with `descr`,
/// `fortran_order` and `shape`, padded with spaces, then the data in C order.
/// Reads `<f4`, `<f8`, `<i8`, `<i4`, `|u1`; writes `<f4` and `<i8`.
public enum NPY {
    public enum Element: String, Sendable { case float32 = "<f4", float64 = "<f8", int64 = "<i8", int32 = "<i4", uint8 = "|u1"
        var size: Int { switch self { case .float32, .int32: 4; case .float64, .int64: 8; case .uint8: 1 } }
    }

    /// An array as read: its shape, element type, and values widened to Double (exact for every
    /// supported type but 64-bit integers beyond 2^53).
    public struct Array: Sendable {
        public let shape: [Int]
        public let element: Element
        public let values: [Double]
    }

    public static func read(_ url: URL) throws -> Array {
        let data = try readFile(url)
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard data.count >= 10, Swift.Array(data.prefix(6)) == magic else {
            throw FormatError(url, "not a .npy file (no \\x93NUMPY magic)")
        }
        let major = data[data.startIndex + 6]
        let headerStart = major == 1 ? 10 : 12
        guard [1, 2, 3].contains(major), data.count >= headerStart else {
            throw FormatError(url, "unsupported .npy version \(major)")
        }
        let headerLength = major == 1 ? Int(data.littleEndian(UInt16.self, at: 8)) : Int(data.littleEndian(UInt32.self, at: 8))
        guard headerStart + headerLength <= data.count,
              let header = String(data: data.subdata(in: (data.startIndex + headerStart)..<(data.startIndex + headerStart + headerLength)), encoding: .utf8)
        else { throw FormatError(url, "header of \(headerLength) bytes runs past the end of the file") }
        let dict = try parseHeader(header, url)
        let start = headerStart + headerLength
        guard let count = checkedProduct(dict.shape), let bytes = checkedProduct([count, dict.element.size]), data.count - start == bytes else {
            let needs = checkedProduct(dict.shape).flatMap { checkedProduct([$0, dict.element.size]) }.map(String.init) ?? "more than an Int counts"
            throw FormatError(url, "shape \(dict.shape) of \(dict.element.rawValue) needs \(needs) bytes of data, the file has \(data.count - start)")
        }
        var values = [Double](repeating: 0, count: count)
        data.withUnsafeBytes { raw in
            let p = raw.baseAddress! + start
            for i in 0..<count {
                switch dict.element {
                case .float32: values[i] = Double(Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))))
                case .float64: values[i] = Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
                case .int64: values[i] = Double(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                case .int32: values[i] = Double(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                case .uint8: values[i] = Double(p.load(fromByteOffset: i, as: UInt8.self))
                }
            }
        }
        return Array(shape: dict.shape, element: dict.element, values: values)
    }

    /// A float32 tensor from any supported file.
    public static func readTensor(_ url: URL) throws -> Tensor {
        let a = try read(url)
        return Tensor(shape: a.shape, a.values.map { Float($0) })
    }

    private static func parseHeader(_ header: String, _ url: URL) throws -> (element: Element, shape: [Int]) {
        func field(_ key: String) -> Substring? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return header[r.upperBound...].drop { $0 == " " }
        }
        guard let d = field("descr"), d.first == "'", let end = d.dropFirst().firstIndex(of: "'") else {
            throw FormatError(url, "header has no 'descr': \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let descr = String(d[d.index(after: d.startIndex)..<end])
        guard let element = Element(rawValue: descr == "<u1" ? "|u1" : descr) else {
            throw FormatError(url, "unsupported dtype '\(descr)' (supported: <f4, <f8, <i8, <i4, |u1)")
        }
        if let f = field("fortran_order"), f.hasPrefix("True") {
            throw FormatError(url, "Fortran-ordered arrays are not supported")
        }
        guard let s = field("shape"), s.first == "(", let close = s.firstIndex(of: ")") else {
            throw FormatError(url, "header has no 'shape' tuple")
        }
        let inside = s[s.index(after: s.startIndex)..<close]
        var shape: [Int] = []
        for part in inside.split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let v = Int(t), v >= 0 else { throw FormatError(url, "bad dimension '\(t)' in shape") }
            shape.append(v)
        }
        return (element, shape)
    }

    /// Serialises float32 data (`<f4`) or int64 (`<i8`) in format 1.0.
    public static func encode(shape: [Int], float32 values: [Float]) -> Data {
        var data = header(descr: "<f4", shape: shape)
        values.withUnsafeBufferPointer { data.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self), count: 4 * values.count)) }
        return data
    }

    public static func encode(shape: [Int], int64 values: [Int64]) -> Data {
        var data = header(descr: "<i8", shape: shape)
        for v in values { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        return data
    }

    public static func write(_ tensor: Tensor, to url: URL) throws {
        try writeAtomically(encode(shape: tensor.shape, float32: tensor.scalars), to: url)
    }

    /// A float32 array [N, ...] written a batch of rows at a time (`ddpm sample --count 100000`
    /// keeps one batch in memory), renamed into place by `finish()` once all N rows are in.
    public final class Writer {
        let file: AtomicFile
        public let shape: [Int]
        var rows = 0

        public init(_ url: URL, shape: [Int]) throws {
            self.shape = shape
            file = try AtomicFile(url)
            try file.write(header(descr: "<f4", shape: shape))
        }

        /// Appends rows [k, shape[1...]] after those written so far.
        public func append(_ rows: Tensor) throws {
            require(Swift.Array(rows.shape.dropFirst()) == Swift.Array(shape.dropFirst()) && self.rows + rows.shape[0] <= shape[0],
                    "NPY.Writer: rows \(rows.shape) do not continue \(shape) after \(self.rows)")
            try file.write(Data(bytes: rows.pointer, count: 4 * rows.count))
            self.rows += rows.shape[0]
        }

        public func finish() throws {
            require(rows == shape[0], "NPY.Writer: \(rows) of \(shape[0]) rows written")
            try file.commit()
        }
    }

    private static func header(descr: String, shape: [Int]) -> Data {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var text = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
        let unpadded = 10 + text.utf8.count + 1
        text += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        withUnsafeBytes(of: UInt16(text.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Swift.Array(text.utf8))
        return data
    }
}
