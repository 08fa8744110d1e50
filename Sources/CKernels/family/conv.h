// Direct 3x3 convolution microkernels: a register tile of 4 output channels x 3 vectors (one image
// per pixel) or 4 x 2 vectors (8 images side by side per pixel), swept over a few input channels.

// A tap: 4 output channels (broadcast weights) times `n` vectors of the plane.
#define TAP(s, wt)                                                                               \
    do {                                                                                         \
        vf x0 = vload(s), x1 = vload((s) + VL), x2 = n > 2 ? vload((s) + 2 * VL) : x1, w;        \
        w = vsplat((wt)[0]); a00 = w * x0 + a00; a01 = w * x1 + a01; if (n > 2) a02 = w * x2 + a02; \
        w = vsplat((wt)[1]); a10 = w * x0 + a10; a11 = w * x1 + a11; if (n > 2) a12 = w * x2 + a12; \
        w = vsplat((wt)[2]); a20 = w * x0 + a20; a21 = w * x1 + a21; if (n > 2) a22 = w * x2 + a22; \
        w = vsplat((wt)[3]); a30 = w * x0 + a30; a31 = w * x1 + a31; if (n > 2) a32 = w * x2 + a32; \
    } while (0)

// out[r, 0 ..< n VL] (+)= the taps of `channels` planes, taps j floats apart (one image per pixel)
// or 8 j apart (8 images per pixel); n vectors (2 or 3) x 4 output channels of accumulators.
static inline __attribute__((always_inline)) void K(tile_body)(const float *planes, long stride, long pitch, long channels,
                                                               const float *w, float *out, long os, int accumulate,
                                                               const int n, const long tap_step) {
    vf a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0};
    vf a20 = {0}, a21 = {0}, a22 = {0}, a30 = {0}, a31 = {0}, a32 = {0};
    if (accumulate) {
        a00 = vload(out); a01 = vload(out + VL); a10 = vload(out + os); a11 = vload(out + os + VL);
        a20 = vload(out + 2 * os); a21 = vload(out + 2 * os + VL); a30 = vload(out + 3 * os); a31 = vload(out + 3 * os + VL);
        if (n > 2) {
            a02 = vload(out + 2 * VL); a12 = vload(out + os + 2 * VL);
            a22 = vload(out + 2 * os + 2 * VL); a32 = vload(out + 3 * os + 2 * VL);
        }
    }
    const long offsets[9] = {0, tap_step, 2 * tap_step, pitch, pitch + tap_step, pitch + 2 * tap_step,
                             2 * pitch, 2 * pitch + tap_step, 2 * pitch + 2 * tap_step};
    for (long c = 0; c < channels; c++) {
        const float *plane = planes + c * stride, *wc = w + c * 36;
        for (int t = 0; t < 9; t++) TAP(plane + offsets[t], wc + 4 * t);
    }
    vstore(out, a00); vstore(out + VL, a01); vstore(out + os, a10); vstore(out + os + VL, a11);
    vstore(out + 2 * os, a20); vstore(out + 2 * os + VL, a21); vstore(out + 3 * os, a30); vstore(out + 3 * os + VL, a31);
    if (n > 2) {
        vstore(out + 2 * VL, a02); vstore(out + os + 2 * VL, a12);
        vstore(out + 2 * os + 2 * VL, a22); vstore(out + 3 * os + 2 * VL, a32);
    }
}
#undef TAP

// 4 x 3 vectors with 32 registers; with 16 (AVX2, SSE), 4 x 2: at 4 x 3 the compiler's register
// allocation spills an accumulator, whose chain then runs through memory at half speed.
#define CONV_TILE_VECTORS (VL >= 16 ? 3 : 2)

static void K(conv3x3_tile)(const float *planes, long stride, long pitch, long channels, const float *w,
                            float *out, long os, int accumulate) {
    K(tile_body)(planes, stride, pitch, channels, w, out, os, accumulate, CONV_TILE_VECTORS, 1);
}

// Neighbouring taps share vectors at 8 images per pixel, so 4 x 2 vectors leave room for the loads.
static void K(conv3x3_interleaved_tile)(const float *planes, long stride, long pitch, long channels, const float *w,
                                        float *out, long os, int accumulate) {
    K(tile_body)(planes, stride, pitch, channels, w, out, os, accumulate, 2, 8);
}

// dW: 12 accumulators (4 output channels x 3 taps of a kernel row), 3 x vectors and one dy vector
// at a time: the 16 registers of AVX2 exactly. Pointers step through the row so that the loop
// keeps no index arithmetic live.
static void K(conv3x3_correlate)(const float *d0, const float *d1, const float *d2, const float *d3, const float *x,
                                 long lanes, long count, long planes, long stride, float *acc) {
    vf a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0};
    vf a20 = {0}, a21 = {0}, a22 = {0}, a30 = {0}, a31 = {0}, a32 = {0};
    for (long p = 0; p < planes; p++) {
        const float *xq = x + p * stride, *q0 = d0 + p * stride, *q1 = d1 + p * stride;
        const float *q2 = d2 + p * stride, *q3 = d3 + p * stride, *end = xq + count;
        for (; xq < end; xq += VL, q0 += VL, q1 += VL, q2 += VL, q3 += VL) {
            vf x0 = vload(xq), x1 = vload(xq + lanes), x2 = vload(xq + 2 * lanes);
            vf y = vload(q0);
            a00 = y * x0 + a00; a01 = y * x1 + a01; a02 = y * x2 + a02;
            y = vload(q1);
            a10 = y * x0 + a10; a11 = y * x1 + a11; a12 = y * x2 + a12;
            y = vload(q2);
            a20 = y * x0 + a20; a21 = y * x1 + a21; a22 = y * x2 + a22;
            y = vload(q3);
            a30 = y * x0 + a30; a31 = y * x1 + a31; a32 = y * x2 + a32;
        }
    }
    acc[0] += vsum(a00); acc[1] += vsum(a01); acc[2] += vsum(a02);
    acc[3] += vsum(a10); acc[4] += vsum(a11); acc[5] += vsum(a12);
    acc[6] += vsum(a20); acc[7] += vsum(a21); acc[8] += vsum(a22);
    acc[9] += vsum(a30); acc[10] += vsum(a31); acc[11] += vsum(a32);
}
