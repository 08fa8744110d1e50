/// A line chart of `values` (a loss curve): white background, grey frame, the series in black and
/// its moving average in red, y on a log scale when every value is positive.
public func lineChart(_ values: [Float], width: Int = 640, height: Int = 320, smoothing: Int = 50) -> Image {
    var pixels = [UInt8](repeating: 255, count: width * height * 3)
    func plot(_ x: Int, _ y: Int, _ rgb: (UInt8, UInt8, UInt8)) {
        guard x >= 0, x < width, y >= 0, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = rgb.0; pixels[i + 1] = rgb.1; pixels[i + 2] = rgb.2
    }
    let margin = 10
    for x in margin..<(width - margin) { plot(x, margin, (160, 160, 160)); plot(x, height - margin, (160, 160, 160)) }
    for y in margin...(height - margin) { plot(margin, y, (160, 160, 160)); plot(width - margin, y, (160, 160, 160)) }
    guard values.count >= 2 else { return Image(width: width, height: height, channels: 3, pixels: pixels) }
    let logScale = values.allSatisfy { $0 > 0 }
    let ys = values.map { logScale ? log10($0) : $0 }
    var smooth: [Float] = []
    var window: Float = 0
    for (i, v) in ys.enumerated() {
        window += v
        if i >= smoothing { window -= ys[i - smoothing] }
        smooth.append(window / Float(min(i + 1, smoothing)))
    }
    let lo = ys.min()!, hi = max(ys.max()!, lo + 1e-6)
    func point(_ i: Int, _ v: Float) -> (Int, Int) {
        let x = margin + Int(Float(i) / Float(values.count - 1) * Float(width - 2 * margin))
        let y = height - margin - Int((v - lo) / (hi - lo) * Float(height - 2 * margin))
        return (x, y)
    }
    for (series, colour) in [(ys, (90 as UInt8, 90 as UInt8, 90 as UInt8)), (smooth, (220, 30, 30))] {
        var previous = point(0, series[0])
        for i in 1..<series.count {
            let p = point(i, series[i])
            let steps = max(abs(p.0 - previous.0), abs(p.1 - previous.1), 1)
            for s in 0...steps {
                plot(previous.0 + (p.0 - previous.0) * s / steps, previous.1 + (p.1 - previous.1) * s / steps, colour)
            }
            previous = p
        }
    }
    return Image(width: width, height: height, channels: 3, pixels: pixels)
}

import Foundation
