import Foundation
import Tensors

/// A layer or a network: something that owns trainable tensors under diffusers' names.
///
/// Each layer lists its own parameters and its children's under dotted prefixes
/// (`down_blocks.1.attentions.0.to_q.weight`), so the names that safetensors files carry are
/// produced in one place per layer, next to the fields they name.
public protocol Module: AnyObject {
    /// Every trainable tensor, by its full diffusers name, in a fixed order.
    var parameters: [(name: String, tensor: Tensor)] { get }
}

extension Module {
    /// `child`'s parameters with their names under `prefix`.
    public func nested(_ prefix: String, _ child: Module?) -> [(name: String, tensor: Tensor)] {
        guard let child else { return [] }
        return child.parameters.map { ("\(prefix).\($0.name)", $0.tensor) }
    }

    /// Parameters of a list of children, named `prefix.0`, `prefix.1`, ...
    public func nested(_ prefix: String, _ children: [Module]) -> [(name: String, tensor: Tensor)] {
        children.enumerated().flatMap { nested("\(prefix).\($0.offset)", $0.element) }
    }

    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.tensor.count } }

    public var parameterTensors: [Tensor] { parameters.map(\.tensor) }

    /// Parameters as a dictionary by name, for saving.
    public var stateDictionary: [String: Tensor] {
        Dictionary(parameters.map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
    }

    /// Copies `tensors` into the parameters, strictly: every parameter must be present with its
    /// exact shape, and nothing else may be. `source` names the file in errors.
    public func load(_ tensors: [String: Tensor], from source: URL) throws {
        var remaining = Set(tensors.keys)
        for (name, p) in parameters {
            guard let t = tensors[name] else { throw LoadError.missing(source.path, name, p.shape) }
            guard t.shape == p.shape else { throw LoadError.shape(source.path, name, expected: p.shape, found: t.shape) }
            if let bad = (0..<t.count).first(where: { !t.pointer[$0].isFinite }) {
                throw LoadError.notFinite(source.path, name, index: bad, value: t.pointer[bad])
            }
            p.pointer.update(from: t.pointer, count: p.count)
            remaining.remove(name)
        }
        if let extra = remaining.sorted().first {
            throw LoadError.unexpected(source.path, extra, count: remaining.count)
        }
    }

    /// Clears every parameter's gradient.
    public func zeroGradients() { for p in parameters { p.tensor.zeroGradient() } }
}

/// A parameter file that does not fit the model.
public enum LoadError: Error, CustomStringConvertible, Equatable {
    case missing(String, String, [Int])
    case shape(String, String, expected: [Int], found: [Int])
    case unexpected(String, String, count: Int)
    case notFinite(String, String, index: Int, value: Float)

    public var description: String {
        switch self {
        case let .missing(file, name, shape): "\(file): tensor '\(name)' (shape \(shape)) is missing"
        case let .notFinite(file, name, index, value): "\(file): tensor '\(name)' holds \(value) at index \(index); weights must be finite"
        case let .shape(file, name, expected, found): "\(file): tensor '\(name)' has shape \(found), the model needs \(expected)"
        case let .unexpected(file, name, count): "\(file): tensor '\(name)' is not a parameter of this model" + (count > 1 ? " (and \(count - 1) more)" : "")
        }
    }
}

/// PyTorch's default initialisation of linear and convolution layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
func uniformInit(_ shape: [Int], fanIn: Int, using rng: inout RandomGenerator) -> Tensor {
    let bound = 1 / Float(fanIn).squareRoot()
    return Tensor.randomUniform(shape, low: -bound, high: bound, using: &rng).trainable()
}
