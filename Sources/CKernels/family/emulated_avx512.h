// The five AVX-512 instructions the families use (masked loads and stores of 4 or 8 floats, scalef),
// lane by lane in C, for the test build that compiles the AVX-512 set for AVX2 + FMA
// (DDPM_EMULATED_AVX512; scripts/test-avx512-emulated): its 16-float tiles, edges and exp then run,
// and are tested, on a CPU without AVX-512. Not part of any other build.
#include <math.h>

static inline __m128 emulated_mm_maskz_loadu_ps(__mmask8 k, const float *p) {
    v4 v = {0};
    for (int i = 0; i < 4; i++)
        if (k >> i & 1) v[i] = p[i];  // a masked-off lane is not read: it may lie past the buffer
    return (__m128)v;
}

static inline void emulated_mm_mask_storeu_ps(float *p, __mmask8 k, __m128 v) {
    for (int i = 0; i < 4; i++)
        if (k >> i & 1) p[i] = ((v4)v)[i];
}

static inline __m256 emulated_mm256_maskz_loadu_ps(__mmask8 k, const float *p) {
    v8 v = {0};
    for (int i = 0; i < 8; i++)
        if (k >> i & 1) v[i] = p[i];
    return (__m256)v;
}

static inline void emulated_mm256_mask_storeu_ps(float *p, __mmask8 k, __m256 v) {
    for (int i = 0; i < 8; i++)
        if (k >> i & 1) p[i] = ((v8)v)[i];
}

/// a times 2^floor(b) in each lane (finite a and b, as exp passes them).
static inline vf emulated_mm512_scalef_ps(vf a, vf b) {
    for (int i = 0; i < VL; i++) a[i] = ldexpf(a[i], (int)floorf(b[i]));
    return a;
}

#define _mm_maskz_loadu_ps emulated_mm_maskz_loadu_ps
#define _mm_mask_storeu_ps emulated_mm_mask_storeu_ps
#define _mm256_maskz_loadu_ps emulated_mm256_maskz_loadu_ps
#define _mm256_mask_storeu_ps emulated_mm256_mask_storeu_ps
#define _mm512_scalef_ps(a, b) (__m512) emulated_mm512_scalef_ps((vf)(a), (vf)(b))
