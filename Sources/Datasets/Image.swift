import CPNG
import Foundation
import Tensors

/// An 8-bit image, grey (1 channel) or RGB (3), pixels interleaved row by row (HWC).
public struct Image: Equatable, Sendable {
    public let width: Int, height: Int, channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        require(channels == 1 || channels == 3, "images are grey or RGB, not \(channels) channels")
        require(pixels.count == width * height * channels, "\(pixels.count) bytes for \(width)x\(height)x\(channels)")
        self.width = width; self.height = height; self.channels = channels; self.pixels = pixels
    }

    /// An image from x [C, H, W] (or [1, C, H, W]) in [-1, 1], as diffusers' pipelines convert:
    /// round(clamp(x / 2 + 0.5, 0, 1) 255).
    public init(_ x: Tensor) {
        let s = x.rank == 4 ? Array(x.shape.dropFirst()) : x.shape
        require(s.count == 3 && x.count == s.reduce(1, *), "an image tensor is [C, H, W], got \(x.shape)")
        let (c, h, w) = (s[0], s[1], s[2])
        var pixels = [UInt8](repeating: 0, count: c * h * w)
        for ch in 0..<c {
            for i in 0..<(h * w) {
                let v = min(max(x.pointer[ch * h * w + i] / 2 + 0.5, 0), 1)
                pixels[i * c + ch] = UInt8((v * 255).rounded())
            }
        }
        self.init(width: w, height: h, channels: c, pixels: pixels)
    }

    /// [1, C, H, W] in [-1, 1]: v / 127.5 - 1.
    public func tensor() -> Tensor {
        let plane = width * height
        let t = Tensor(zeros: [1, channels, height, width])
        for i in 0..<plane { for ch in 0..<channels { t.pointer[ch * plane + i] = Float(pixels[i * channels + ch]) / 127.5 - 1 } }
        return t
    }

    // MARK: PNG

    /// Reads a PNG of any colour type: grey stays grey, anything else becomes RGB (alpha composited on black).
    public static func readPNG(_ url: URL) throws -> Image {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        guard png_image_begin_read_from_file(&image, url.path) != 0 else {
            defer { png_image_free(&image) }
            throw FormatError(url, "not a readable PNG (\(Image.libpngMessage(image)))")
        }
        let grey = image.format & png_uint_32(PNG_FORMAT_FLAG_COLOR) == 0
        image.format = grey ? png_uint_32(PNG_FORMAT_GRAY) : png_uint_32(PNG_FORMAT_FLAG_COLOR)  // PNG_FORMAT_RGB is the colour flag alone
        let channels = grey ? 1 : 3
        let (w, h) = (Int(image.width), Int(image.height))
        var pixels = [UInt8](repeating: 0, count: w * h * channels)
        let ok = pixels.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard ok != 0 else {
            defer { png_image_free(&image) }
            throw FormatError(url, "corrupt PNG data (\(Image.libpngMessage(image)))")
        }
        return Image(width: w, height: h, channels: channels, pixels: pixels)
    }

    /// The PNG encoding of this image (8-bit grey or RGB).
    public func pngData() throws -> Data {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = channels == 1 ? png_uint_32(PNG_FORMAT_GRAY) : png_uint_32(PNG_FORMAT_FLAG_COLOR)
        var size: png_alloc_size_t = 0
        // first call sizes the buffer, second writes it
        guard pixels.withUnsafeBytes({ png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil) }) != 0 else {
            throw FormatError(URL(fileURLWithPath: "<memory>"), "PNG encoding failed (\(Image.libpngMessage(image)))")
        }
        var data = Data(count: Int(size))
        let ok = data.withUnsafeMutableBytes { out in
            pixels.withUnsafeBytes { png_image_write_to_memory(&image, out.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        guard ok != 0 else { throw FormatError(URL(fileURLWithPath: "<memory>"), "PNG encoding failed (\(Image.libpngMessage(image)))") }
        return data.prefix(Int(size))
    }

    /// Writes a PNG atomically (temporary file, then rename).
    public func writePNG(to url: URL) throws { try writeAtomically(pngData(), to: url) }

    private static func libpngMessage(_ image: png_image) -> String {
        var m = image.message
        return withUnsafeBytes(of: &m) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

/// The integer factor that makes an image of this width at least 64 pixels wide on screen.
public func gridScale(width: Int) -> Int { max(1, (64 + width - 1) / max(width, 1)) }

/// Tiles images [N, C, H, W] in [-1, 1] into one image, `columns` across, each enlarged `scale`
/// times by nearest neighbour (default: to at least 64 pixels wide; 1 keeps their size), separated
/// by `padding` pixels of `background` (0..255).

public func imageGrid(_ images: Tensor, columns: Int? = nil, padding: Int = 2, background: UInt8 = 0, scale: Int? = nil) -> Image {
    let (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
    let k = max(1, scale ?? gridScale(width: w))
    let cols = max(1, min(n, columns ?? Int(Double(n).squareRoot().rounded(.up))))
    let rows = (n + cols - 1) / cols
    let (sh, sw) = (h * k, w * k)
    let gw = cols * sw + (cols + 1) * padding, gh = rows * sh + (rows + 1) * padding
    var pixels = [UInt8](repeating: background, count: gw * gh * c)
    for i in 0..<n {
        let tile = Image(images.slice(i..<(i + 1)))
        let x0 = padding + (i % cols) * (sw + padding), y0 = padding + (i / cols) * (sh + padding)
        for y in 0..<sh {
            for x in 0..<sw {  // nearest neighbour: each pixel k x k times
                for ch in 0..<c { pixels[((y0 + y) * gw + x0 + x) * c + ch] = tile.pixels[((y / k) * w + x / k) * c + ch] }
            }
        }
    }
    return Image(width: gw, height: gh, channels: c, pixels: pixels)
}
