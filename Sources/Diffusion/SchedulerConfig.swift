import Foundation
import Tensors

/// `scheduler/scheduler_config.json` with diffusers' keys and defaults. One struct serves the DDPM
/// and DDIM schedulers (a DDIM built from a DDPM config, as `DDIMScheduler.from_config` does, takes
/// the keys it knows and defaults the rest). Unknown keys are ignored; a known key with a wrong type
/// or an impossible value is an error that names it.
public struct SchedulerConfig: Equatable, Sendable {
    public enum BetaSchedule: String, Sendable, CaseIterable { case linear, scaledLinear = "scaled_linear", cosine = "squaredcos_cap_v2" }
    public enum PredictionType: String, Sendable, CaseIterable { case epsilon, sample, vPrediction = "v_prediction" }
    public enum VarianceType: String, Sendable, CaseIterable {
        case fixedSmall = "fixed_small", fixedSmallLog = "fixed_small_log", fixedLarge = "fixed_large", fixedLargeLog = "fixed_large_log"
        /// The model outputs 2C channels, the second half the variance (Nichol & Dhariwal 2021):
        /// `learned_range` v in [-1, 1] interpolates log beta_t and the posterior's log variance,
        /// `learned` is the variance itself (as diffusers' DDPMScheduler reads it).
        case learned = "learned", learnedRange = "learned_range"

        public var isLearned: Bool { self == .learned || self == .learnedRange }
    }
    public enum TimestepSpacing: String, Sendable, CaseIterable { case leading, trailing, linspace }

    public var className = "DDPMScheduler"
    public var numTrainTimesteps = 1000
    public var betaStart = 0.0001
    public var betaEnd = 0.02
    public var betaSchedule = BetaSchedule.linear
    public var trainedBetas: [Double]? = nil
    public var rescaleBetasZeroSNR = false
    public var predictionType = PredictionType.epsilon
    public var varianceType = VarianceType.fixedSmall
    public var clipSample = true
    public var clipSampleRange = 1.0
    public var thresholding = false
    public var dynamicThresholdingRatio = 0.995
    public var sampleMaxValue = 1.0
    public var timestepSpacing = TimestepSpacing.leading
    public var stepsOffset = 0
    /// DDIM only: abar before the first step is 1 (else abar_0).
    public var setAlphaToOne = true

    public init() {}

    /// Parses the JSON of a scheduler config; `source` names the file in errors.
    public init(json data: Data, source: URL) throws {
        let r = try ConfigReader(json: data, source: source)
        className = try r.string("_class_name") ?? className
        numTrainTimesteps = try r.int("num_train_timesteps") ?? numTrainTimesteps
        betaStart = try r.double("beta_start") ?? betaStart
        betaEnd = try r.double("beta_end") ?? betaEnd
        betaSchedule = try r.enumeration("beta_schedule") ?? betaSchedule
        trainedBetas = try r.doubles("trained_betas")
        rescaleBetasZeroSNR = try r.bool("rescale_betas_zero_snr") ?? rescaleBetasZeroSNR
        predictionType = try r.enumeration("prediction_type") ?? predictionType
        varianceType = try r.enumeration("variance_type") ?? varianceType
        clipSample = try r.bool("clip_sample") ?? clipSample
        clipSampleRange = try r.double("clip_sample_range") ?? clipSampleRange
        thresholding = try r.bool("thresholding") ?? thresholding
        dynamicThresholdingRatio = try r.double("dynamic_thresholding_ratio") ?? dynamicThresholdingRatio
        sampleMaxValue = try r.double("sample_max_value") ?? sampleMaxValue
        timestepSpacing = try r.enumeration("timestep_spacing") ?? timestepSpacing
        stepsOffset = try r.int("steps_offset") ?? stepsOffset
        setAlphaToOne = try r.bool("set_alpha_to_one") ?? setAlphaToOne
        try validate(source: source)
    }

    public static func load(_ url: URL) throws -> SchedulerConfig {
        try SchedulerConfig(json: ConfigReader.contents(of: url), source: url)
    }

    /// Checks every value that would make the schedule meaningless.
    public func validate(source: URL) throws {
        guard numTrainTimesteps >= 1 else { throw ConfigError(source, key: "num_train_timesteps", "must be at least 1, is \(numTrainTimesteps)") }
        if let trainedBetas {
            guard trainedBetas.count == numTrainTimesteps else {
                throw ConfigError(source, key: "trained_betas", "has \(trainedBetas.count) values for num_train_timesteps \(numTrainTimesteps)")
            }
            if let bad = trainedBetas.first(where: { !($0 > 0 && $0 < 1) }) {
                throw ConfigError(source, key: "trained_betas", "holds \(bad); every beta must lie in (0, 1)")
            }
        } else if betaSchedule != .cosine {
            for (key, v) in [("beta_start", betaStart), ("beta_end", betaEnd)] where !(v > 0 && v < 1) {
                throw ConfigError(source, key: key, "must lie in (0, 1), is \(v)")
            }
        }
        guard clipSampleRange > 0 else { throw ConfigError(source, key: "clip_sample_range", "must be positive, is \(clipSampleRange)") }
        guard dynamicThresholdingRatio > 0 && dynamicThresholdingRatio <= 1 else {
            throw ConfigError(source, key: "dynamic_thresholding_ratio", "must lie in (0, 1], is \(dynamicThresholdingRatio)")
        }
        guard sampleMaxValue >= 1 else { throw ConfigError(source, key: "sample_max_value", "must be at least 1, is \(sampleMaxValue)") }
        guard stepsOffset >= 0 else { throw ConfigError(source, key: "steps_offset", "must not be negative, is \(stepsOffset)") }
    }

    /// The JSON diffusers writes, every key present, sorted.
    public func json(className: String? = nil) -> Data {
        let dict: [String: Any] = [
            "_class_name": className ?? self.className, "_diffusers_version": "0.42.1",
            "num_train_timesteps": numTrainTimesteps, "beta_start": betaStart, "beta_end": betaEnd,
            "beta_schedule": betaSchedule.rawValue, "trained_betas": trainedBetas.map { $0 as Any } ?? NSNull(),
            "rescale_betas_zero_snr": rescaleBetasZeroSNR, "prediction_type": predictionType.rawValue,
            "variance_type": varianceType.rawValue, "clip_sample": clipSample, "clip_sample_range": clipSampleRange,
            "thresholding": thresholding, "dynamic_thresholding_ratio": dynamicThresholdingRatio,
            "sample_max_value": sampleMaxValue, "timestep_spacing": timestepSpacing.rawValue,
            "steps_offset": stepsOffset, "set_alpha_to_one": setAlphaToOne,
        ]
        return try! JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys])
    }
}

