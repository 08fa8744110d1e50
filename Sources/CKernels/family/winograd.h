// Winograd F(2x2, 3x3) input and output transforms, 8 channels per vector (the products between
// them are sgemms): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].

static void K(winograd_input)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    long vplane = images * th * tw * cp;
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx;
                const float *d = p + ((image * ph + 2 * ty) * pw + 2 * tx) * cp;
                float *q = v + t * cp;
                for (long k = 0; k < cp; k += 8) {
                    v8 e[4][4];
                    for (int col = 0; col < 4; col++) {
                        // e = B^T d, a column at a time: rows 0..3 of the block at this column
                        v8 d0 = load8(d + (0 * pw + col) * cp + k), d1 = load8(d + (1 * pw + col) * cp + k);
                        v8 d2 = load8(d + (2 * pw + col) * cp + k), d3 = load8(d + (3 * pw + col) * cp + k);
                        e[0][col] = d0 - d2; e[1][col] = d1 + d2; e[2][col] = d2 - d1; e[3][col] = d1 - d3;
                    }
                    for (int r = 0; r < 4; r++) {  // each row times B
                        float *base = q + 4 * r * vplane + k;
                        store8(base, e[r][0] - e[r][2]);
                        store8(base + vplane, e[r][1] + e[r][2]);
                        store8(base + 2 * vplane, e[r][2] - e[r][1]);
                        store8(base + 3 * vplane, e[r][1] - e[r][3]);
                    }
                }
            }
}

static void K(winograd_output)(const float *m, long images, long th, long tw, long op, const float *bias,
                               long o, long h, long w, int accumulate, float *y) {
    long mplane = images * th * tw * op;
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx, yy = 2 * ty, xx = 2 * tx;
                const float *s = m + t * op;
                int right = xx + 1 < w, below = yy + 1 < h;
                for (long k = 0; k < op; k += 8) {
                    v8 at[16];
                    for (int xi = 0; xi < 16; xi++) at[xi] = load8(s + xi * mplane + k);
                    // A^T M by columns, then each row times A
                    v8 s0[4], s1[4];
                    for (int c = 0; c < 4; c++) {
                        s0[c] = at[c] + at[4 + c] + at[8 + c];
                        s1[c] = at[4 + c] - at[8 + c] - at[12 + c];
                    }
                    v8 b = load8(bias + k);
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
