import Foundation

/// A configuration file with a missing, mistyped or impossible value.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let key: String?
    public let problem: String
    public init(_ file: URL, key: String?, _ problem: String) {
        self.file = file.path; self.key = key; self.problem = problem
    }
    public var description: String { "\(file): " + (key.map { "'\($0)' " } ?? "") + problem }
}

/// Typed access to a JSON dictionary with errors that name the key. A JSON null reads as absent.
public struct ConfigReader {
    let dict: [String: Any]
    let source: URL

    public init(dict: [String: Any], source: URL) { self.dict = dict; self.source = source }

    /// Reads a JSON object from a file.
    public init(file: URL) throws {
        try self.init(json: Self.contents(of: file), source: file)
    }

    /// A config file's bytes, or an error naming it.
    public static func contents(of file: URL) throws -> Data {
        guard let data = FileManager.default.contents(atPath: file.path) else { throw ConfigError(file, key: nil, "cannot be read") }
        return data
    }

    public init(json data: Data, source: URL) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Self.standardJSON(data)), let dict = object as? [String: Any] else {
            throw ConfigError(source, key: nil, "is not a JSON object")
        }
        self.init(dict: dict, source: source)
    }

    /// Python's `json` writes infinities and NaN as bare `-Infinity`, `Infinity` and `NaN` (diffusers'
    /// DPMSolverMultistepScheduler saves `"lambda_min_clipped": -Infinity`), which JSON has no
    /// words for: they are read as these placeholder strings, which `double` turns back into numbers.
    static let pythonNumbers: [String: Double] = ["__-Infinity__": -.infinity, "__Infinity__": .infinity, "__NaN__": .nan]
    public static let negativeInfinityPlaceholder = "__-Infinity__"

    static func standardJSON(_ data: Data) -> Data {
        guard let text = String(data: data, encoding: .utf8), text.contains("Infinity") || text.contains("NaN"),
              let pattern = try? NSRegularExpression(pattern: #"([:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]\}])"#) else { return data }
        let range = NSRange(text.startIndex..., in: text)
        return Data(pattern.stringByReplacingMatches(in: text, range: range, withTemplate: "$1\"__$2__\"").utf8)
    }

    /// JSON as Python writes it: the placeholder of an infinity back to a bare `-Infinity`.
    public static func pythonJSON(_ data: Data) -> Data {
        guard let text = String(data: data, encoding: .utf8) else { return data }
        return Data(text.replacingOccurrences(of: "\"\(negativeInfinityPlaceholder)\"", with: "-Infinity").utf8)
    }

    /// Whether the key is present with a non-null value.
    public func contains(_ key: String) -> Bool { value(key) != nil }

    /// Whether the key is present with the value null.
    public func containsNull(_ key: String) -> Bool { dict[key] is NSNull }

    private func value(_ key: String) -> Any? {
        guard let v = dict[key], !(v is NSNull) else { return nil }
        return v
    }
    private func number(_ key: String) throws -> NSNumber? {
        guard let v = value(key) else { return nil }
        if let s = v as? String, let n = Self.pythonNumbers[s] { return NSNumber(value: n) }
        guard let n = v as? NSNumber, !isBool(n) else { throw ConfigError(source, key: key, "must be a number, is \(v)") }
        return n
    }
    /// JSON booleans arrive as NSNumbers whose Objective-C type is `c` (char).
    private func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    public func int(_ key: String) throws -> Int? {
        guard let n = try number(key) else { return nil }
        guard n.doubleValue == n.doubleValue.rounded() else { throw ConfigError(source, key: key, "must be an integer, is \(n)") }
        return n.intValue
    }
    public func double(_ key: String) throws -> Double? { try number(key)?.doubleValue }
    public func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, isBool(n) else { throw ConfigError(source, key: key, "must be true or false, is \(v)") }
        return n.boolValue
    }
    public func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v as? String else { throw ConfigError(source, key: key, "must be a string, is \(v)") }
        return s
    }
    public func strings(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let a = v as? [String] else { throw ConfigError(source, key: key, "must be a list of strings, is \(v)") }
        return a
    }
    public func ints(_ key: String) throws -> [Int]? {
        guard let v = value(key) else { return nil }
        guard let a = v as? [NSNumber], a.allSatisfy({ !isBool($0) && $0.doubleValue == $0.doubleValue.rounded() }) else {
            throw ConfigError(source, key: key, "must be a list of integers, is \(v)")
        }
        return a.map(\.intValue)
    }
    public func doubles(_ key: String) throws -> [Double]? {
        guard let v = value(key) else { return nil }
        guard let a = v as? [NSNumber], a.allSatisfy({ !isBool($0) }) else { throw ConfigError(source, key: key, "must be a list of numbers") }
        return a.map(\.doubleValue)
    }
    /// An object whose keys are 0, 1, ..., n-1 and whose values are strings (diffusers' `id2label`), as a list.
    public func indexedStrings(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let d = v as? [String: Any], let names = d as? [String: String] else {
            throw ConfigError(source, key: key, "must be an object of strings by index, is \(v)")
        }
        return try (0..<names.count).map { i in
            guard let name = names[String(i)] else { throw ConfigError(source, key: key, "has \(names.count) entries but none for index \(i)") }
            return name
        }
    }

    public func enumeration<E: RawRepresentable & CaseIterable>(_ key: String) throws -> E? where E.RawValue == String {
        guard let s = try string(key) else { return nil }
        guard let e = E(rawValue: s) else {
            throw ConfigError(source, key: key, "'\(s)' is not supported (supported: \(E.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return e
    }
}
