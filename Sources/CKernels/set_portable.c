// The portable set: plain C over 4-float vectors (SSE2 on x86-64, NEON on AArch64), for any CPU.
#include "CKernels.h"

// Winograd's transforms keep 8-float vectors here too (two SSE registers); they are static and
// inlined within this file, so the ABI that -Wpsabi warns about is never crossed.
#pragma clang diagnostic ignored "-Wpsabi"
#define SET portable
#define SET_NAME "portable"
#define VL 4
#include "family/set.h"
