/// Checks what a caller passed, as `precondition` does, but keeps the message in optimised builds:
/// Swift -O drops `precondition`'s text, which left a library user with a bare "precondition
/// failure" (SIGILL) for, say, a class-conditional model sampled without labels.
@inlinable
public func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = String(),
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
