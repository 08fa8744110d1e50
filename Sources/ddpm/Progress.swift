import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    let total: Int
    let label: String
    let enabled = isatty(STDERR_FILENO) != 0
    let start = Date()

    func update(_ done: Int, detail: String = "") {
        guard enabled else { return }
        let width = 30, filled = width * done / max(total, 1)
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let line = String(format: "\r%@ [%@] %d/%d  %.0fs left %@", label, bar, done, total, eta, detail)
        FileHandle.standardError.write(Data(line.utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
