// The AVX2 + FMA set: 8-float vectors, 16 registers (Haswell and later, AMD Zen).
#include "CKernels.h"

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define SET avx2
#define SET_NAME "avx2+fma"
#define VL 8
#define FUSED_MULTIPLY_ADD 1
#include "family/set.h"
#pragma clang attribute pop
#endif
