// The vector of one kernel set: VL floats (defined by the set's file before including this).
// a * b + c in one expression becomes one FMA where the set has FMA (clang contracts within an
// expression by default); the portable set gets a multiply and an add.
#include <stdint.h>
#include <string.h>

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));
typedef uint32_t vu __attribute__((vector_size(VL * 4)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
#ifdef EMULATED_AVX512
#include "emulated_avx512.h"
#endif

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
/// s in every lane (a loop the compiler turns into one broadcast; `(vf){0} + s` would add, since
/// 0 + -0 is +0).
static inline vf vsplat(float s) {
    vf v;
    for (int i = 0; i < VL; i++) v[i] = s;
    return v;
}
static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v4 load4(const float *p) { v4 v; memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, v4 v) { memcpy(p, &v, sizeof v); }

/// The first n floats of v (0 <= n <= 4, or 8) at p, added to what p holds when `add`; the floats
/// past them are not touched (the edges of an output plane). With AVX-512 (MASKED_STORES), one
/// masked load and store; otherwise whole vectors when n is, and float by float when not, each
/// lane by a constant index (a variable one goes through the stack).
static inline void store4_head(float *p, v4 v, long n, int add) {
#ifdef MASKED_STORES
    __mmask8 lanes = (__mmask8)((1u << n) - 1);
    if (add) v += (v4)_mm_maskz_loadu_ps(lanes, p);
    _mm_mask_storeu_ps(p, lanes, (__m128)v);
#else
    if (n == 4) {
        store4(p, add ? v + load4(p) : v);
        return;
    }
    switch (n) {
    case 3: p[2] = add ? p[2] + v[2] : v[2]; [[fallthrough]];
    case 2: p[1] = add ? p[1] + v[1] : v[1]; [[fallthrough]];
    case 1: p[0] = add ? p[0] + v[0] : v[0];
    }
#endif
}

static inline void store8_head(float *p, v8 v, long n, int add) {
#ifdef MASKED_STORES
    __mmask8 lanes = (__mmask8)((1u << n) - 1);
    if (add) v += (v8)_mm256_maskz_loadu_ps(lanes, p);
    _mm256_mask_storeu_ps(p, lanes, (__m256)v);
#else
    if (n == 8) {
        store8(p, add ? v + load8(p) : v);
        return;
    }
    store4_head(p, __builtin_shufflevector(v, v, 0, 1, 2, 3), n < 4 ? n : 4, add);
    if (n > 4) store4_head(p + 4, __builtin_shufflevector(v, v, 4, 5, 6, 7), n - 4, add);
#endif
}

/// 1 in the last `count` lanes (0 <= count <= VL), 0 in the others: the lanes of a vector that
/// overlaps whole vectors before it and is new past them. One load from a ramp of VL zeros then
/// VL ones (lane by lane, a compare per lane became a chain of inserts and permutes).
static inline vf vlast(long count) {
    static const float ramp[2 * VL] = {[VL ... 2 * VL - 1] = 1.0f};
    return vload(ramp + count);
}

/// Lane by lane a > b ? a : b: one max instruction (x86's max returns its second operand for a
/// NaN, as this does); `__builtin_elementwise_max` adds a compare and a blend for NaN's sake.
static inline vf vmax(vf a, vf b) {
    vi greater = a > b;
    return (vf)(((vi)a & greater) | ((vi)b & ~greater));
}

/// The lanes' sum by halving (upper half onto lower, log2 VL adds): a sum lane by lane would be one
/// chain of VL dependent scalar adds, since the compiler may not reorder float additions.
static inline float vsum(vf v) {
    float t[VL];
    memcpy(t, &v, sizeof t);
    for (int w = VL / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) t[i] += t[i + w];
    return t[0];
}

/// The largest lane, by halving.
static inline float vmaxlane(vf v) {
    float t[VL];
    memcpy(t, &v, sizeof t);
    for (int w = VL / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) t[i] = t[i] > t[i + w] ? t[i] : t[i + w];
    return t[0];
}

/// exp(x) by range reduction: x = n ln2 + r, |r| <= ln2 / 2, then exp(r) by a degree-5 polynomial
/// fitted for least maximum relative error on that range (7.5e-8; Taylor's degree 6 had 1.2e-7 and
/// one more FMA), and 2^n. n is rounded by adding 1.5 2^23 + 127, which leaves n + 127 in the low
/// mantissa bits, so that shifting them into the exponent field gives 2^n; or one scalef where the
/// set has AVX-512 (EXP_BY_SCALEF). x comes clamped to [-87, 88], where 2^n is a normal float.
/// n ln2 comes off in two parts (Cody and Waite: n times the first has no rounding error), or, when
/// not `exact_ln2`, in one FMA with ln2 rounded to float, whose error (1.9e-9) adds |n| 1.9e-9 to
/// the result's relative error.
static inline vf exp_clamped(vf x, const int exact_ln2) {
    vf rounded = x * 1.44269504f + 12583039.0f;
    vf n = rounded - 12583039.0f;
    vf r = exact_ln2 ? (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f
                     : x - n * 0.693147182464599609375f;
    vf p = vsplat(8.297654448523236e-3f);
    p = p * r + 4.191538312691106e-2f;
    p = p * r + 1.6667574745178348e-1f;
    p = p * r + 4.99988948413012e-1f;
    p = p * r + 9.999996919845684e-1f;
    p = p * r + 1.0000000716556134f;
#ifdef EXP_BY_SCALEF
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    return p * (vf)((vu)rounded << 23);
#endif
}

/// exp(x): in float arithmetic within 2.3e-7 of it (-80 <= x <= 10).
static inline vf vexp(vf x) {
    x = __builtin_elementwise_min(__builtin_elementwise_max(x, vsplat(-87.0f)), vsplat(88.0f));
    return exp_clamped(x, 1);
}

/// exp(x) for x <= 0, as softmax takes it (scores less their row's largest or its log-sum-exp):
/// no upper clamp, and, where the set has FMA (FUSED_MULTIPLY_ADD), ln2 in one part; within
/// 2.4e-7 of exp(x) for -20 <= x <= 0, where a row's sum lies, and 4.3e-7 below. Two vector
/// operations fewer than vexp (the exp loop 1.34x faster alone on Zen 3). Without FMA the product
/// n ln2 would round (up to 1e-6 of the result), so there ln2 comes off in two parts, as in vexp.
static inline vf vexp_nonpositive(vf x) {
#ifdef FUSED_MULTIPLY_ADD
    const int exact_ln2 = 0;
#else
    const int exact_ln2 = 1;
#endif
    return exp_clamped(__builtin_elementwise_max(x, vsplat(-87.0f)), exact_ln2);
}

/// The same for one float (the tails of rows), by the same polynomial.
static inline float sexp(float x) { return vexp(vsplat(x))[0]; }
static inline float sexp_nonpositive(float x) { return vexp_nonpositive(vsplat(x))[0]; }
