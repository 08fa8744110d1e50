import Datasets
import Foundation
import Testing
import Tensors
import TestSupport

@Suite struct ImageTests {
    @Test(arguments: [1, 3])
    func pngRoundTrip(channels: Int) throws {
        let pixels = (0..<(7 * 5 * channels)).map { UInt8(($0 * 37) % 256) }
        let image = Image(width: 7, height: 5, channels: channels, pixels: pixels)
        let url = temporaryDirectory().appendingPathComponent("x.png")
        try image.writePNG(to: url)
        #expect(try Image.readPNG(url) == image)
    }

    @Test func tensorMappingMatchesDiffusers() {
        // round(clamp(x / 2 + 0.5, 0, 1) * 255)
        let x = Tensor(shape: [1, 1, 1, 5], [-1, 0, 1, 2, -0.5])
        #expect(Image(x).pixels == [0, 128, 255, 255, 64])
        let back = Image(width: 2, height: 1, channels: 1, pixels: [0, 255]).tensor()
        #expect(back.scalars == [-1, 1])
    }

    @Test func gridPlacesTilesRowMajor() {
        // four 2x2 grey tiles with values -1, 1, 1, -1 in a 2x2 grid with 1 px padding of 100
        var values: [Float] = []
        for v: Float in [-1, 1, 1, -1] { values += Array(repeating: v, count: 4) }
        let grid = imageGrid(Tensor(shape: [4, 1, 2, 2], values), columns: 2, padding: 1, background: 100, scale: 1)
        #expect(grid.width == 7 && grid.height == 7)
        #expect(grid.pixels[0] == 100)
        #expect(grid.pixels[1 * 7 + 1] == 0 && grid.pixels[1 * 7 + 4] == 255)
        #expect(grid.pixels[4 * 7 + 1] == 255 && grid.pixels[4 * 7 + 4] == 0)
    }

    /// Small images are enlarged by an integer factor, nearest neighbour: 28 pixels become 84 by
    /// default (at least 64), and each source pixel fills a k x k block.
    @Test func gridEnlargesSmallImages() {
        var rng = RandomGenerator(seed: 1)
        let images = Tensor.randomNormal([2, 1, 28, 28], using: &rng)
        #expect(gridScale(width: 28) == 3 && gridScale(width: 32) == 2 && gridScale(width: 64) == 1 && gridScale(width: 100) == 1)
        let grid = imageGrid(images, columns: 2, padding: 2)
        #expect(grid.width == 2 * 84 + 3 * 2 && grid.height == 84 + 2 * 2)
        let plain = imageGrid(images, columns: 2, padding: 2, scale: 1)
        for (y, x) in [(0, 0), (5, 17), (27, 27)] {
            let source = plain.pixels[(2 + y) * plain.width + 2 + 28 + 2 + x]  // second tile
            for dy in 0..<3 { for dx in 0..<3 {
                #expect(grid.pixels[(2 + 3 * y + dy) * grid.width + 2 + 84 + 2 + 3 * x + dx] == source)
            } }
        }
    }

    @Test func corruptPNGThrowsNamingFile() throws {
        let dir = temporaryDirectory()
        let good = try Image(width: 4, height: 4, channels: 1, pixels: Array(repeating: 9, count: 16)).pngData()
        for (name, data) in [("text", Data("hello".utf8)), ("truncated", good.prefix(good.count / 2))] {
            let url = dir.appendingPathComponent("\(name).png")
            try data.write(to: url)
            let error = #expect(throws: FormatError.self) { try Image.readPNG(url) }
            #expect(error?.description.contains(url.path) == true)
        }
    }
}
