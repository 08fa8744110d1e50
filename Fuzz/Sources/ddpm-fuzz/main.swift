import Foundation

// libFuzzer's driver, started from our own main (SwiftPM names an executable's entry point itself,
// so libFuzzer's main cannot be used): `ddpm-fuzz CORPUS -max_total_time=60 ...` with
// DDPM_FUZZ_TARGET set, as scripts/fuzz runs it.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
_ = target  // fail early on a missing DDPM_FUZZ_TARGET
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) })
