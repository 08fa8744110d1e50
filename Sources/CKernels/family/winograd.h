// One image [c, h, w] into p [ph, pw, cp]: pixel (r, col) at (r + 1, col + 1), zero around it and
// in the padding channels. Each channel's plane is read as one run of h w pixels, whatever the
// width: 8 channels x 8 consecutive pixels go through one transpose (the last 8 of the plane
// overlap the block before them). A run of pixels is done for every block of channels before the
// next run; runs are long (256 KB of output), so that each channel is read in long sequential
// stretches (the reads are this copy's cost: 64-pixel runs were slower) while what is written
// stays in L2.
static void K(channels_last_bordered)(const float *x, long c, long h, long w, float *p, long ph, long pw, long cp) {
    long line = pw * cp, hw = h * w;
    memset(p, 0, line * sizeof(float));
    memset(p + (h + 1) * line, 0, (ph - h - 1) * line * sizeof(float));
    for (long r = 0; r < h; r++) {
        float *row = p + (r + 1) * line;
        memset(row, 0, cp * sizeof(float));
        memset(row + (w + 1) * cp, 0, (pw - w - 1) * cp * sizeof(float));
    }
    long whole = hw >= 8 ? c / 8 * 8 : 0;  // channels that go through transposes
    long length = (65536 / cp + 7) / 8 * 8;
    for (long run = 0; run < hw; run += length)
        for (long k0 = 0; k0 < whole; k0 += 8)
            for (long f = run; f < run + length && f < hw; f += 8) {
                long first = f + 8 <= hw ? f : hw - 8;
                v8 block[8];
                for (int k = 0; k < 8; k++) {  // 8 streams, which the hardware prefetchers follow late
                    __builtin_prefetch(x + (k0 + k) * hw + first + 256);
                    block[k] = load8(x + (k0 + k) * hw + first);
                }
                K(transpose8)(block);
                long r = first / w, col = first % w;
                for (int j = 0; j < 8; j++) {
                    store8(p + ((r + 1) * pw + col + 1) * cp + k0, block[j]);
                    if (++col == w) { col = 0; r++; }
                }
            }
    if (whole == cp) return;
    for (long r = 0; r < h; r++)  // the channels left over, one at a time, and zero in the padding ones
        for (long col = 0; col < w; col++) {
            float *q = p + ((r + 1) * pw + col + 1) * cp;
            // scalar loads: vectorised, this was the binary's one gather (AVX-512), slow on Xeons
            // whose microcode mitigates Gather Data Sampling
#pragma clang loop vectorize(disable)
            for (long k = whole; k < c; k++) q[k] = x[k * hw + r * w + col];
            for (long k = c; k < cp; k++) q[k] = 0;
        }
}

// Winograd F(2x2, 3x3) input and output transforms, channels last (the products between them are
// small GEMMs): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1]. The
// transforms that write V step a whole vector of channels (VL), the output transforms 8; the
// channel counts are padded to both (`vectorPadded`).

// Each row of B^T d is two rows of d combined (row0 - row2, row1 + row2, row2 - row1, row1 - row3),
// made and multiplied by B one at a time so that few vectors are live. Channels a whole vector at
// a time (cp is a multiple of VL: `vectorPadded`).
static void K(winograd_input)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    static const int first[4] = {0, 1, 2, 1}, second[4] = {2, 2, 1, 3};
    static const float sign[4] = {-1, 1, -1, -1};
    long vplane = ddpm_winograd_plane(images * th * tw * cp);
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx;
                const float *d = p + ((image * ph + 2 * ty) * pw + 2 * tx) * cp;
                float *q = v + t * cp;
                for (long k = 0; k < cp; k += VL) {
                    for (int r = 0; r < 4; r++) {
                        vf e[4];
                        for (int col = 0; col < 4; col++)
                            e[col] = vload(d + (first[r] * pw + col) * cp + k) + sign[r] * vload(d + (second[r] * pw + col) * cp + k);
                        float *base = q + 4 * r * vplane + k;
                        vstore(base, e[0] - e[2]);
                        vstore(base + vplane, e[1] + e[2]);
                        vstore(base + 2 * vplane, e[2] - e[1]);
                        vstore(base + 3 * vplane, e[1] - e[3]);
                    }
                }
            }
}

// The 2x2 outputs of tile t for 8 channels from k: A^T M by columns (two sums of three rows each),
// then each row times A, plus the bias b. y[r][col] is output row r, column col.
static inline void K(winograd_at2)(const float *m, long mplane, long t, long op, long k, v8 b, v8 y[2][2]) {
    const float *s = m + t * op + k;
    v8 s0[4], s1[4];
    for (int c = 0; c < 4; c++) {
        v8 m0 = load8(s + c * mplane), m1 = load8(s + (4 + c) * mplane);
        v8 m2 = load8(s + (8 + c) * mplane), m3 = load8(s + (12 + c) * mplane);
        s0[c] = m0 + m1 + m2;
        s1[c] = m1 - m2 - m3;
    }
    y[0][0] = s0[0] + s0[1] + s0[2] + b; y[0][1] = s0[1] - s0[2] - s0[3] + b;
    y[1][0] = s1[0] + s1[1] + s1[2] + b; y[1][1] = s1[1] - s1[2] - s1[3] + b;
}

// Up to four tiles side by side go together: per output row, their 8 vectors transposed give each
// of 8 channels its (up to) 8 consecutive pixels, stored as one vector, cut at the image's edge.
static void K(winograd_output)(const float *m, long images, long th, long tw, long op, const float *bias,
                               long bias_stride, long o, long h, long w, int accumulate, float *y) {
    long mplane = ddpm_winograd_plane(images * th * tw * op);
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx += 4) {
                long t = (image * th + ty) * tw + tx, yy = 2 * ty, xx = 2 * tx;
                long tiles = tw - tx < 4 ? tw - tx : 4, pixels = w - xx < 8 ? w - xx : 8;
                long rows = h - yy < 2 ? h - yy : 2;
                const float *b = bias + image * bias_stride;
                for (long k = 0; k < op; k += 8) {
                    v8 line[2][8] = {{{0}}}, out[2][2];
                    for (int q = 0; q < tiles; q++) {
                        K(winograd_at2)(m, mplane, t + q, op, k, load8(b + k), out);
                        for (int r = 0; r < 2; r++) { line[r][2 * q] = out[r][0]; line[r][2 * q + 1] = out[r][1]; }
                    }
                    long lanes = o - k < 8 ? o - k : 8;
                    for (int r = 0; r < rows; r++) {
                        K(transpose8)(line[r]);
                        for (long lane = 0; lane < lanes; lane++) {
                            float *row = y + ((image * o + k + lane) * h + yy + r) * w + xx;
                            store8_head(row, line[r][lane], pixels, accumulate);
                        }
                    }
                }
            }
}

// Winograd F(4x4, 3x3) on the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray 2016):
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
// Both transforms go in two passes, columns then rows, through a 6x6 block of vectors on the stack.

// t = B^T applied to six vectors (a column or a row of the block).
static inline void K(winograd4_bt)(const vf d[6], vf t[6]) {
    vf a = d[4] - d[2], b = d[3] - d[1];
    t[0] = 4.0f * (d[0] - d[2]) + a;  // 4 d0 - 5 d2 + d4
    t[1] = a - 4.0f * (d[1] + d[2]) + d[3] + d[2];  // -4 d1 - 4 d2 + d3 + d4
    t[2] = a + 4.0f * (d[1] - d[2]) - d[3] + d[2];  // 4 d1 - 4 d2 - d3 + d4
    t[3] = a + 2.0f * b;  // -2 d1 - d2 + 2 d3 + d4
    t[4] = a - 2.0f * b;  // 2 d1 - d2 - 2 d3 + d4
    t[5] = 4.0f * (d[1] - d[3]) + d[5] - d[3];  // 4 d1 - 5 d3 + d5
}

// A, side rows of m (the transpose of A^T), applied to m vectors: F(2x2) [1 0; 1 1; 1 -1; 0 -1],
// F(4x4) [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1]. The weight gradient's
// transform of dy (dM = A dY A^T) is the output transform's adjoint.
static inline __attribute__((always_inline)) void K(winograd_a)(const vf *d, vf *t, const int m) {
    if (m == 2) {
        t[0] = d[0]; t[1] = d[0] + d[1]; t[2] = d[0] - d[1]; t[3] = -d[1];
        return;
    }
    vf even = d[0] + d[2], odd = d[1] + d[3], even4 = d[0] + 4.0f * d[2], odd4 = 2.0f * d[1] + 8.0f * d[3];
    t[0] = d[0]; t[1] = even + odd; t[2] = even - odd; t[3] = even4 + odd4; t[4] = even4 - odd4; t[5] = d[3];
}

// The transforms that write V's layout, in two passes: for tile (ty, tx) the n x n block of the
// bordered images at pixel (step ty + origin, step tx + origin), a 1-D transform of n vectors into
// `side` down each column, then along each row, to v[side r + col][t][k]. `kind` 0: F(4x4)'s B^T
// (n = side = 6); 2 or 4: F(m x m)'s A (n = m, side = m + 2). Constant arguments where inlined.
static inline __attribute__((always_inline)) void K(winograd_blocks)(const float *p, long images, long th, long tw,
                                                                     long ph, long pw, long cp, float *v,
                                                                     const int step, const int origin, const int n,
                                                                     const int side, const int kind) {
    long vplane = ddpm_winograd_plane(images * th * tw * cp);
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx;
                const float *d = p + ((image * ph + step * ty + origin) * pw + step * tx + origin) * cp;
                float *q = v + t * cp;
                for (long k = 0; k < cp; k += VL) {
                    vf block[6][6], column[6], out[6];
                    for (int col = 0; col < n; col++) {  // a column at a time: block[row][col]
                        for (int r = 0; r < n; r++) column[r] = vload(d + (r * pw + col) * cp + k);
                        if (kind == 0) K(winograd4_bt)(column, out); else K(winograd_a)(column, out, kind);
                        for (int r = 0; r < side; r++) block[r][col] = out[r];
                    }
                    for (int r = 0; r < side; r++) {  // then each row
                        if (kind == 0) K(winograd4_bt)(block[r], out); else K(winograd_a)(block[r], out, kind);
                        for (int col = 0; col < side; col++) vstore(q + (side * r + col) * vplane + k, out[col]);
                    }
                }
            }
}

// V = B^T d B for the 6x6 block d under each tile.
static void K(winograd4_input)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    K(winograd_blocks)(p, images, th, tw, ph, pw, cp, v, 4, 0, 6, 6, 0);
}

// y = A^T applied to six vectors.
static inline void K(winograd4_at)(const v8 m[6], v8 y[4]) {
    v8 s = m[1] + m[2], d = m[1] - m[2], s2 = m[3] + m[4], d2 = m[3] - m[4];
    y[0] = m[0] + s + s2;
    y[1] = d + 2.0f * d2;
    y[2] = s + 4.0f * s2;
    y[3] = d + 8.0f * d2 + m[5];
}

// The rows of one tile's outputs for 8 channels, A^T M already applied down the columns (block),
// times A along each row, plus b, two rows at a time: their 8 vectors transposed give each channel its
// 2 x 4 outputs. `rows`, `columns` and `lanes` clip at the image's and the channels' ends; they
// are constants in the common whole tile, where this is inlined.
static inline __attribute__((always_inline)) void K(winograd4_store)(v8 block[4][6], v8 b, float *y, long plane,
                                                                     long w, long rows, long columns, long lanes,
                                                                     int accumulate) {
    for (int r = 0; r < rows; r += 2) {
        v8 pair[8];
        K(winograd4_at)(block[r], pair);
        K(winograd4_at)(block[r + 1], pair + 4);
        for (int c = 0; c < 8; c++) pair[c] += b;
        K(transpose8)(pair);
        for (long lane = 0; lane < lanes; lane++) {
            float *row = y + lane * plane + r * w;
            store4_head(row, __builtin_shufflevector(pair[lane], pair[lane], 0, 1, 2, 3), columns, accumulate);
            if (r + 1 < rows)
                store4_head(row + w, __builtin_shufflevector(pair[lane], pair[lane], 4, 5, 6, 7), columns,
                            accumulate);
        }
    }
}

static void K(winograd4_output)(const float *m, long images, long th, long tw, long op, const float *bias,
                                long bias_stride, long o, long h, long w, int accumulate, float *y) {
    long mplane = ddpm_winograd_plane(images * th * tw * op);
    for (long image = 0; image < images; image++)
        for (long ty = 0; ty < th; ty++)
            for (long tx = 0; tx < tw; tx++) {
                long t = (image * th + ty) * tw + tx, yy = 4 * ty, xx = 4 * tx;
                const float *s = m + t * op;
                long rows = h - yy < 4 ? h - yy : 4, columns = w - xx < 4 ? w - xx : 4;
                for (long k = 0; k < op; k += 8) {
                    v8 block[4][6], column[6], out[4], b = load8(bias + image * bias_stride + k);
                    for (int col = 0; col < 6; col++) {  // A^T M, a column at a time
                        for (int r = 0; r < 6; r++) column[r] = load8(s + (6 * r + col) * mplane + k);
                        K(winograd4_at)(column, out);
                        for (int r = 0; r < 4; r++) block[r][col] = out[r];
                    }
                    long lanes = o - k < 8 ? o - k : 8;
                    float *corner = y + ((image * o + k) * h + yy) * w + xx;
                    if (rows == 4 && columns == 4 && lanes == 8)
                        K(winograd4_store)(block, b, corner, h * w, w, 4, 4, 8, accumulate);
                    else
                        K(winograd4_store)(block, b, corner, h * w, w, rows, columns, lanes, accumulate);
                }
            }
}

// The kernel transform G k G^T, 8 output channels per vector: the rows of G times k's three rows,
// then each of those times G^T, into the column panels that small_gemm reads. Input channels inside,
// so that 8 outputs' rows of w are read forward: across all outputs for one input, w's rows (9 c
// floats apart: 9 KB at 256 channels) fell in a few L1 sets, and this ran 1.6-2.5x slower
// (with clang's gathers for the taps, which are now loaded one by one).
static void K(winograd_weights)(const float *w, long c, long outputs, int flipped, const float *g, long side,
                                long ip, long op, long a0, long a1, float *u) {
    long plane = ddpm_winograd_plane(ip * op);
    for (long b0 = 0; b0 < outputs; b0 += 8)
        for (long a = a0; a < a1; a++) {
            long lanes = outputs - b0 < 8 ? outputs - b0 : 8;
            v8 k[9], gk[6][3];
            for (int t = 0; t < 9; t++) {
                float taps[8] = {0};
#pragma clang loop vectorize(disable)
                for (long l = 0; l < lanes; l++)
                    taps[l] = flipped ? w[(a * c + b0 + l) * 9 + 8 - t] : w[((b0 + l) * c + a) * 9 + t];
                k[t] = load8(taps);
            }
            for (long i = 0; i < side; i++)
                for (int q = 0; q < 3; q++) gk[i][q] = g[3 * i] * k[q] + g[3 * i + 1] * k[3 + q] + g[3 * i + 2] * k[6 + q];
            for (long i = 0; i < side; i++)
                for (long j = 0; j < side; j++)
                    store8(u + (side * i + j) * plane + K(panel_index)(a, b0, ip, op),
                           gk[i][0] * g[3 * j] + gk[i][1] * g[3 * j + 1] + gk[i][2] * g[3 * j + 2]);
        }
}

// Its adjoint G^T du G, 8 output channels per vector: each row of du times G, summed into the
// kernel's rows by G^T. Outputs inside: du's 36 planes are read forward (inputs inside, they were
// 36 streams of one vector a row, and this ran 1.3x slower).
static void K(winograd_weights_adjoint)(const float *du, long c, long outputs, const float *g, long side, long ip,
                                        long op, long a0, long a1, float *dw) {
    long plane = ddpm_winograd_plane(ip * op);
    for (long a = a0; a < a1; a++)
        for (long b0 = 0; b0 < outputs; b0 += 8) {
            v8 k[9] = {{0}};
            for (long i = 0; i < side; i++) {
                v8 r0 = {0}, r1 = {0}, r2 = {0};
                for (long j = 0; j < side; j++) {
                    v8 d = load8(du + (side * i + j) * plane + a * op + b0);
                    r0 = d * g[3 * j] + r0; r1 = d * g[3 * j + 1] + r1; r2 = d * g[3 * j + 2] + r2;
                }
                for (int p = 0; p < 3; p++) {
                    float gp = g[3 * i + p];
                    k[3 * p] = gp * r0 + k[3 * p]; k[3 * p + 1] = gp * r1 + k[3 * p + 1]; k[3 * p + 2] = gp * r2 + k[3 * p + 2];
                }
            }
            long lanes = outputs - b0 < 8 ? outputs - b0 : 8;
            for (long l = 0; l < lanes; l++)
                for (int t = 0; t < 9; t++) dw[((b0 + l) * c + a) * 9 + t] += k[t][l];
        }
}

// dM = A dY A^T for the m x m block dY of dy under each tile (zero past the image), one row and
// column into the bordered image: the weight gradient's transform of dy, stored as V is.
static void K(winograd_output_adjoint)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    K(winograd_blocks)(p, images, th, tw, ph, pw, cp, v, 2, 1, 2, 4, 2);
}

static void K(winograd4_output_adjoint)(const float *p, long images, long th, long tw, long ph, long pw, long cp, float *v) {
    K(winograd_blocks)(p, images, th, tw, ph, pw, cp, v, 4, 1, 4, 6, 4);
}
