import Foundation
import Tensors

/// `scheduler/scheduler_config.json` with diffusers' keys and defaults. One struct serves every
/// scheduler class: each class's defaults come from `init(className:)` (diffusers' own differ:
/// DDPM spaces timesteps `leading` and clips x_0, the sigma-based samplers use `linspace`), a config
/// read for one class keeps the keys it holds when another class is built from it (as diffusers'
/// `from_config` does), and `json()` writes the keys of its class only. Unknown keys are ignored; a
/// known key with a wrong type, an impossible value or a variant we do not compute is an error
/// that names it.
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
    /// DPM-Solver++'s second-order update rule.
    public enum SolverType: String, Sendable, CaseIterable { case midpoint, heun }
    /// The sigma after the last step: 0, or the schedule's smallest.
    public enum FinalSigmas: String, Sendable, CaseIterable { case zero, sigmaMin = "sigma_min" }

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
    // DPM-Solver++ (algorithm_type "dpmsolver++", the only one computed here)
    public var solverOrder = 2
    public var solverType = SolverType.midpoint
    public var lowerOrderFinal = true
    public var eulerAtFinal = false
    public var lambdaMinClipped = -Double.infinity
    // the sigma-based samplers (DPM-Solver++, Euler, Heun)
    public var useKarrasSigmas = false
    public var finalSigmasType = FinalSigmas.zero
    public var sigmaMin: Double? = nil
    public var sigmaMax: Double? = nil
    /// Keys the file marks as its class's defaults (`_use_default_values`): a scheduler of another
    /// class made from this config takes its own defaults for them, as `from_config` does. Where a
    /// value came from is not part of it: two configs with equal values are equal.
    public var defaultedKeys = Provenance()

    public struct Provenance: Equatable, Sendable {
        public var keys: [String] = []
        public static func == (_: Provenance, _: Provenance) -> Bool { true }
    }

    /// DDPMScheduler's defaults.
    public init() {}

    /// The defaults of diffusers' class `className` (its `__init__` arguments).
    public init(className: String) {
        self.className = className
        switch className {
        case "DDPMScheduler", "DDIMScheduler": break
        case "HeunDiscreteScheduler":
            betaStart = 0.00085; betaEnd = 0.012; clipSample = false; timestepSpacing = .linspace
        default:
            clipSample = false; timestepSpacing = .linspace
        }
    }

    /// The keys diffusers' class writes besides `_class_name` and `_diffusers_version`.
    static func keys(of className: String) -> [String] {
        let schedule = ["num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
                        "timestep_spacing", "steps_offset", "rescale_betas_zero_snr"]
        let clipping = ["clip_sample", "clip_sample_range", "thresholding", "dynamic_thresholding_ratio", "sample_max_value"]
        switch className {
        case "DDPMScheduler": return schedule + clipping + ["variance_type"]
        case "DDIMScheduler": return schedule + clipping + ["set_alpha_to_one"]
        case "DPMSolverMultistepScheduler":
            return schedule + ["thresholding", "dynamic_thresholding_ratio", "sample_max_value", "solver_order", "algorithm_type",
                               "solver_type", "lower_order_final", "euler_at_final", "use_karras_sigmas", "final_sigmas_type",
                               "lambda_min_clipped", "variance_type"]
        case "EulerDiscreteScheduler":
            return schedule + ["interpolation_type", "use_karras_sigmas", "sigma_min", "sigma_max", "timestep_type", "final_sigmas_type"]
        case "HeunDiscreteScheduler": return schedule.filter { $0 != "rescale_betas_zero_snr" } + ["use_karras_sigmas", "clip_sample", "clip_sample_range"]
        default: return schedule
        }
    }

    /// Parses the JSON of a scheduler config; `source` names the file in errors.
    public init(json data: Data, source: URL) throws {
        let r = try ConfigReader(json: data, source: source)
        self.init(className: try r.string("_class_name") ?? "DDPMScheduler")
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
        solverOrder = try r.int("solver_order") ?? solverOrder
        solverType = try r.enumeration("solver_type") ?? solverType
        lowerOrderFinal = try r.bool("lower_order_final") ?? lowerOrderFinal
        eulerAtFinal = try r.bool("euler_at_final") ?? eulerAtFinal
        lambdaMinClipped = try r.double("lambda_min_clipped") ?? lambdaMinClipped  // Python's -Infinity: see ConfigReader
        useKarrasSigmas = try r.bool("use_karras_sigmas") ?? useKarrasSigmas
        finalSigmasType = try r.enumeration("final_sigmas_type") ?? finalSigmasType
        sigmaMin = try r.double("sigma_min")
        sigmaMax = try r.double("sigma_max")
        // keys the file leaves out are defaults too (diffusers registers them in _use_default_values)
        let marked = try r.strings("_use_default_values") ?? []
        defaultedKeys.keys = marked + Self.keys(of: className).filter { !r.contains($0) && !r.containsNull($0) && !marked.contains($0) }
        // variants diffusers has and we do not compute: refused by key rather than silently ignored
        let unsupported: [(String, Any?, String)] = [
            ("algorithm_type", try r.string("algorithm_type").flatMap { $0 == "dpmsolver++" ? nil : $0 }, "only dpmsolver++ is computed here"),
            ("interpolation_type", try r.string("interpolation_type").flatMap { $0 == "linear" ? nil : $0 }, "only linear is computed here"),
            ("timestep_type", try r.string("timestep_type").flatMap { $0 == "discrete" ? nil : $0 }, "only discrete is computed here"),
        ] + ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"].map { key in
            (key, (try? r.bool(key)) == true ? true : nil, "is true; that sigma schedule is not computed here (use_karras_sigmas is)")
        }
        if let (key, value, why) = unsupported.first(where: { $0.1 != nil }) {
            throw ConfigError(source, key: key, "is \(value!); \(why)")
        }
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
        guard (1...2).contains(solverOrder) else { throw ConfigError(source, key: "solver_order", "is \(solverOrder); orders 1 and 2 are computed here") }
        for (key, v) in [("sigma_min", sigmaMin), ("sigma_max", sigmaMax)] {
            if let v, !(v > 0 && v.isFinite) { throw ConfigError(source, key: key, "must be positive, is \(v)") }
        }
    }

    /// This config read by another scheduler class (diffusers' `OtherScheduler.from_config`): every
    /// key it holds carries over, except those marked as defaults, which take the new class's.
    public func converted(to newClass: String) throws -> SchedulerConfig {
        guard newClass != className else { return self }
        var dict = values.filter { !defaultedKeys.keys.contains($0.key) }
        dict["_class_name"] = newClass
        let data = ConfigReader.pythonJSON(try JSONSerialization.data(withJSONObject: dict))
        return try SchedulerConfig(json: data, source: URL(fileURLWithPath: "\(className) config as \(newClass)"))
    }

    /// The JSON diffusers writes for this config's class: every key of the class, sorted.
    public func json() -> Data {
        var dict = values.filter { Self.keys(of: className).contains($0.key) }
        dict["_class_name"] = className
        dict["_diffusers_version"] = "0.42.1"
        return ConfigReader.pythonJSON(try! JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys]))
    }

    /// Every key this struct knows, with its value as JSON holds it.
    var values: [String: Any] {
        [
            "num_train_timesteps": numTrainTimesteps, "beta_start": betaStart, "beta_end": betaEnd,
            "beta_schedule": betaSchedule.rawValue, "trained_betas": trainedBetas.map { $0 as Any } ?? NSNull(),
            "rescale_betas_zero_snr": rescaleBetasZeroSNR, "prediction_type": predictionType.rawValue,
            "variance_type": className == "DDPMScheduler" || varianceType.isLearned ? varianceType.rawValue : NSNull(),
            "clip_sample": clipSample, "clip_sample_range": clipSampleRange,
            "thresholding": thresholding, "dynamic_thresholding_ratio": dynamicThresholdingRatio,
            "sample_max_value": sampleMaxValue, "timestep_spacing": timestepSpacing.rawValue,
            "steps_offset": stepsOffset, "set_alpha_to_one": setAlphaToOne,
            "solver_order": solverOrder, "algorithm_type": "dpmsolver++", "solver_type": solverType.rawValue,
            "lower_order_final": lowerOrderFinal, "euler_at_final": eulerAtFinal,
            "lambda_min_clipped": lambdaMinClipped.isFinite ? lambdaMinClipped as Any : ConfigReader.negativeInfinityPlaceholder,
            "use_karras_sigmas": useKarrasSigmas, "final_sigmas_type": finalSigmasType.rawValue,
            "sigma_min": sigmaMin.map { $0 as Any } ?? NSNull(), "sigma_max": sigmaMax.map { $0 as Any } ?? NSNull(),
            "interpolation_type": "linear", "timestep_type": "discrete",
        ]
    }
}
