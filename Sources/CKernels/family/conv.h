// Direct 3x3 convolution microkernels: a register tile of 4 output channels x 3 vectors (one image
// per pixel) or 4 x 2 vectors (8 images side by side per pixel), swept over a few input channels.

#define LOAD_ROW(r, n) for (int v = 0; v < n; v++) acc[r][v] = accumulate ? vload(out + r * os + v * VL) : (vf){0}

static inline __attribute__((always_inline)) void K(tile_body)(const float *planes, long stride, long pitch, long channels, const float *w,
                                float *out, long os, int accumulate, const int vectors, const long tap_step) {
    vf acc[4][3];
    for (int r = 0; r < 4; r++) LOAD_ROW(r, vectors);
    const float *plane = planes, *wc = w;
    for (long c = 0; c < channels; c++) {
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3; j++) {
                const float *s = plane + i * pitch + j * tap_step, *wt = wc + (i * 3 + j) * 4;
                vf x[3];
                for (int v = 0; v < vectors; v++) x[v] = vload(s + v * VL);
                for (int r = 0; r < 4; r++) {
                    vf wr = vsplat(wt[r]);
                    for (int v = 0; v < vectors; v++) acc[r][v] = wr * x[v] + acc[r][v];
                }
            }
        }
        plane += stride;
        wc += 36;
    }
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < vectors; v++) vstore(out + r * os + v * VL, acc[r][v]);
}

static void K(conv3x3_tile)(const float *planes, long stride, long pitch, long channels, const float *w,
                            float *out, long os, int accumulate) {
    K(tile_body)(planes, stride, pitch, channels, w, out, os, accumulate, 3, 1);
}

// Neighbouring taps share vectors at 8 images per pixel, so 4 x 2 vectors leave room for the loads.
static void K(conv3x3_interleaved_tile)(const float *planes, long stride, long pitch, long channels, const float *w,
                                        float *out, long os, int accumulate) {
    K(tile_body)(planes, stride, pitch, channels, w, out, os, accumulate, 2, 8);
}

// dW: 12 accumulators (4 output channels x 3 taps of a kernel row), 3 x vectors and one dy vector.
static void K(conv3x3_correlate)(const float *d0, const float *d1, const float *d2, const float *d3, const float *x,
                                 long lanes, long count, long planes, long stride, float *acc) {
    vf a[4][3];
    for (int r = 0; r < 4; r++) for (int j = 0; j < 3; j++) a[r][j] = (vf){0};
    for (long p = 0; p < planes; p++) {
        const float *xq = x + p * stride, *q[4] = {d0 + p * stride, d1 + p * stride, d2 + p * stride, d3 + p * stride};
        for (long t = 0; t < count; t += VL) {
            vf x0 = vload(xq + t), x1 = vload(xq + t + lanes), x2 = vload(xq + t + 2 * lanes);
            for (int r = 0; r < 4; r++) {
                vf y = vload(q[r] + t);
                a[r][0] = y * x0 + a[r][0];
                a[r][1] = y * x1 + a[r][1];
                a[r][2] = y * x2 + a[r][2];
            }
        }
    }
    for (int r = 0; r < 4; r++) for (int j = 0; j < 3; j++) acc[3 * r + j] += vsum(a[r][j]);
}
#undef LOAD_ROW
