import Datasets
import Diffusion
import Foundation
import Layers
import Testing
import Tensors

/// The model `ddpm sample` uses by default, as committed under `models/`.
let bundledModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("models/fashion-mnist")

@Suite struct BundledModelTests {
    /// The committed weights are trained and load as trained: on 64 held-out Fashion-MNIST images
    /// (the t10k set, never seen in training) noised at timesteps spread over the whole schedule,
    /// the model predicts the noise with a mean squared error far below the 1 that predicting
    /// zero gives (training's loss is about 0.04). Untrained, misloaded or mis-wired weights fail.
    @Test func predictsNoiseOnHeldOutImages() throws {
        let pipeline = try Pipeline.load(bundledModel)
        #expect(pipeline.unet.config == UNetConfig.Preset.fmnist.config)
        let test = try ImageDataset.idx(URL(fileURLWithPath: ImageDataset.fashionMNISTFolder + "/t10k-images-idx3-ubyte.gz"))
        let n = 64
        let x0 = Tensor(shape: [n, 1, 28, 28], Array(UnsafeBufferPointer(start: test.pixels.pointer, count: n * 784)))
        let schedule = NoiseSchedule(pipeline.schedulerConfig)
        let timesteps = (0..<n).map { $0 * schedule.count / n + 7 }
        var rng = RandomGenerator(seed: 3)
        let noise = Tensor.randomNormal(x0.shape, using: &rng)
        let xt = schedule.addNoise(x0, noise: noise, timesteps: timesteps)
        let prediction = withoutGradients { pipeline.unet(xt, timesteps: timesteps.map(Float.init)) }
        let error = meanSquaredError(prediction, noise).item
        print("bundled model: noise-prediction MSE \(error) on \(n) held-out images")
        #expect(error < 0.08, "noise-prediction MSE \(error)")
    }
}
