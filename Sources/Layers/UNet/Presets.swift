/// The named model sizes (DESIGN.md, "Presets").
extension UNetConfig {
    public enum Preset: String, CaseIterable, Sendable {
        case tiny, fmnist, cifar10

        public var config: UNetConfig {
            switch self {
            case .tiny: .tiny
            case .fmnist: .fmnist
            case .cifar10: .cifar10
            }
        }
    }

    /// For tests and smoke runs: 28x28 grey, blocks (16, 32), one resnet per block.
    public static var tiny: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 28; c.inChannels = 1; c.outChannels = 1
        c.blockOutChannels = [16, 32]; c.layersPerBlock = 1; c.normNumGroups = 8
        c.downBlockTypes = [.plain, .attention]; c.upBlockTypes = [.attention, .plain]
        return c
    }

    /// Fashion-MNIST: 28x28 grey, blocks (32, 64, 128), two resnets per block, attention at 14x14.
    /// 3,691,713 parameters, 0.867 GFLOP per image forward.
    public static var fmnist: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 28; c.inChannels = 1; c.outChannels = 1
        c.blockOutChannels = [32, 64, 128]; c.layersPerBlock = 2; c.normNumGroups = 8
        c.downBlockTypes = [.plain, .attention, .plain]; c.upBlockTypes = [.plain, .attention, .plain]
        return c
    }

    /// The original DDPM CIFAR-10 model as google/ddpm-cifar10-32 configures it: 35,746,307 parameters.
    public static var cifar10: UNetConfig {
        var c = UNetConfig()
        c.sampleSize = 32; c.inChannels = 3; c.outChannels = 3
        c.blockOutChannels = [128, 256, 256, 256]; c.layersPerBlock = 2
        c.downBlockTypes = [.plain, .attention, .plain, .plain]; c.upBlockTypes = [.plain, .plain, .attention, .plain]
        c.normNumGroups = 32; c.normEps = 1e-6; c.attentionHeadDim = nil
        c.flipSinToCos = false; c.freqShift = 1; c.downsamplePadding = 0; c.dropout = 0.1
        return c
    }
}
