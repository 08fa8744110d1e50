import Foundation

/// A file that cannot be read as what it claims to be. The text names the file and the problem.
public struct FormatError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let problem: String
    public init(_ file: URL, _ problem: String) {
        self.file = file.path
        self.problem = problem
    }
    public var description: String { "\(file): \(problem)" }
}

/// The product of `factors` (a shape's element count, or that times an element's bytes), nil when
/// it overflows: a header that promises more than any machine holds is refused, not trapped on.
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for f in factors {
        let (p, overflow) = product.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        product = p
    }
    return product
}

/// Writes `data` next to `url` under a temporary name, flushes it, and renames it into place, so a
/// reader never sees half a file and an interrupted write leaves the old one intact.
public func writeAtomically(_ data: Data, to url: URL) throws {
    let file = try AtomicFile(url)
    try file.write(data)
    try file.commit()
}

/// A file written in pieces under a temporary name beside `url` (`.NAME.PID.tmp`) and renamed into
/// place by `commit()`, after a flush to disk. Until then the old file, if any, is untouched; a
/// file dropped without `commit()` removes its temporary.
public final class AtomicFile {
    public let url: URL
    let temporary: URL
    let handle: FileHandle
    var committed = false

    public init(_ url: URL) throws {
        self.url = url
        let dir = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        temporary = dir.appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
            throw FormatError(url, "cannot create a file in \(dir.path)")
        }
        handle = try FileHandle(forWritingTo: temporary)
    }

    public func write(_ data: Data) throws {
        do { try handle.write(contentsOf: data) } catch {
            throw FormatError(url, "cannot write (\((error as NSError).localizedDescription)); the previous file, if any, is intact")
        }
    }

    public func commit() throws {
        try handle.synchronize()
        try handle.close()
        committed = true
        if rename(temporary.path, url.path) != 0 {
            let code = errno
            try? FileManager.default.removeItem(at: temporary)
            throw FormatError(url, "cannot rename the temporary file into place: \(String(cString: strerror(code)))")
        }
    }

    deinit {
        if !committed {
            try? handle.close()
            try? FileManager.default.removeItem(at: temporary)
        }
    }
}

func readFile(_ url: URL) throws -> Data {
    do { return try Data(contentsOf: url, options: .mappedIfSafe) } catch {
        throw FormatError(url, "cannot read the file (\((error as NSError).localizedDescription))")
    }
}

extension Data {
    /// Little-endian integer at `offset`; the caller has checked the bounds.
    func littleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        Swift.withUnsafeMutableBytes(of: &v) { dst in
            self.copyBytes(to: dst.bindMemory(to: UInt8.self), from: (startIndex + offset)..<(startIndex + offset + MemoryLayout<T>.size))
        }
        return T(littleEndian: v)
    }
}
