// Winograd F(2x2, 3x3) input and output transforms, 8 channels per vector (the products between
// them are sgemms): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].

// Each row of B^T d is two rows of d combined (row0 - row2, row1 + row2, row2 - row1, row1 - row3),
// made and multiplied by B one at a time so that few vectors are live.
static void K(winograd_input)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    static const int first[4] = {0, 1, 2, 1}, second[4] = {2, 2, 1, 3};
    static const float sign[4] = {-1, 1, -1, -1};
    long vplane = images * th * tw * cp;
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx;
                const float *d = p + ((image * ph + 2 * ty) * pw + 2 * tx) * cp;
                float *q = v + t * cp;
                for (long k = 0; k < cp; k += 8) {
                    for (int r = 0; r < 4; r++) {
                        v8 e[4];
                        for (int col = 0; col < 4; col++)
                            e[col] = load8(d + (first[r] * pw + col) * cp + k) + sign[r] * load8(d + (second[r] * pw + col) * cp + k);
                        float *base = q + 4 * r * vplane + k;
                        store8(base, e[0] - e[2]);
                        store8(base + vplane, e[1] + e[2]);
                        store8(base + 2 * vplane, e[2] - e[1]);
                        store8(base + 3 * vplane, e[1] - e[3]);
                    }
                }
            }
}

// A^T M by columns (two sums of three rows each), then each row times A.
static void K(winograd_output)(const float *m, long images, long th, long tw, long op, const float *bias,
                               long bias_stride, long o, long h, long w, int accumulate, float *y) {
    long mplane = images * th * tw * op;
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx, yy = 2 * ty, xx = 2 * tx;
                const float *s = m + t * op;
                int right = xx + 1 < w, below = yy + 1 < h;
                for (long k = 0; k < op; k += 8) {
                    v8 s0[4], s1[4];
                    for (int c = 0; c < 4; c++) {
                        v8 m0 = load8(s + c * mplane + k), m1 = load8(s + (4 + c) * mplane + k);
                        v8 m2 = load8(s + (8 + c) * mplane + k), m3 = load8(s + (12 + c) * mplane + k);
                        s0[c] = m0 + m1 + m2;
                        s1[c] = m1 - m2 - m3;
                    }
                    v8 b = load8(bias + image * bias_stride + k);
                    v8 y00 = s0[0] + s0[1] + s0[2] + b, y01 = s0[1] - s0[2] - s0[3] + b;
                    v8 y10 = s1[0] + s1[1] + s1[2] + b, y11 = s1[1] - s1[2] - s1[3] + b;
                    long lanes = o - k < 8 ? o - k : 8;
                    for (long lane = 0; lane < lanes; lane++) {
                        float *out = y + ((image * o + k + lane) * h + yy) * w + xx;
                        if (accumulate) {
                            out[0] += y00[lane];
                            if (right) out[1] += y01[lane];
                            if (below) { out[w] += y10[lane]; if (right) out[w + 1] += y11[lane]; }
                        } else {
                            out[0] = y00[lane];
                            if (right) out[1] = y01[lane];
                            if (below) { out[w] = y10[lane]; if (right) out[w + 1] = y11[lane]; }
                        }
                    }
                }
            }
}
