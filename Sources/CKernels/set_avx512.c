// The AVX-512 set: 16-float vectors, 32 registers (Skylake-SP and later Xeons, AMD Zen 4).
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#ifdef DDPM_EMULATED_AVX512
// The test build of scripts/test-avx512-emulated: the same set for AVX2 + FMA, its five AVX-512
// instructions in C (family/emulated_avx512.h), so that its tests run on any CPU with AVX2.
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define EMULATED_AVX512 1
#pragma clang diagnostic ignored "-Wpsabi"  // 16-float vectors between inlined functions, in ymm pairs
#else
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), apply_to = function)
#endif
#define SET avx512
#define SET_NAME "avx512"
#define VL 16
#define FUSED_MULTIPLY_ADD 1
#define EXP_BY_SCALEF 1
#define MASKED_STORES 1
#include "family/set.h"
#pragma clang attribute pop
#endif
