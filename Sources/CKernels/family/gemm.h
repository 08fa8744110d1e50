// Small products C [m, n] = A [m, k] B [k, n] (row-major A and C, n a multiple of 8): Winograd's
// transformed tiles times its transformed kernels, where k and n are channel counts (up to a few
// hundred) and m is a few dozen to a few thousand tiles. B comes packed in column panels, as the
// kernel transform writes it (panel_index): each panel's k rows are one run of memory, which the
// prefetchers follow from L3 and which sits in L1 without conflicts. Row-major rows of B 512 bytes
// or more apart (128 channels and up) ran 15-40% slower (36 planes of B from L3, AVX-512). C is
// written once, without the beta pass of a general sgemm. Register tile: 6 rows x 2 vectors
// (12 accumulators, 2 loads of B and a broadcast of A per step: 15 of AVX2's 16 registers), then
// 8 columns at a time for the rest of n.

// Where B[row][col] of a [rows, n] matrix lies in the panel layout: columns in panels of 2 VL (the
// tile's width), then of 8 past the last whole one; the panel of columns j0 ..< j0 + width holds its
// rows one after another, `width` floats each, from j0 rows. Eight columns from a multiple of 8 are
// one run.
static inline long K(panel_width)(long col, long n) { return col < n / (2 * VL) * (2 * VL) ? 2 * VL : 8; }

static inline long K(panel_index)(long row, long col, long rows, long n) {
    long width = K(panel_width)(col, n), first = col & -width;  // widths are powers of 2
    return first * rows + row * width + col - first;
}

// B [k, n] (row-major, leading dimension ldb) into the panel layout: for callers whose B is not
// made in it (the tests).
static void K(pack_panels)(const float *b, long ldb, long k, long n, float *packed) {
    for (long e = 0; e < k; e++)
        for (long j = 0; j < n; j += 8) store8(packed + K(panel_index)(e, j, k, n), load8(b + e * ldb + j));
}

// rows x (2 vectors) of C from the same rows of A; `rows` is a constant where this is inlined.
static inline __attribute__((always_inline)) void K(gemm_tile)(const float *a, long lda, const float *b, long k,
                                                               float *c, long ldc, const int rows) {
    vf acc[6][2] = {{{0}}};
    for (long e = 0; e < k; e++) {
        vf b0 = vload(b + 2 * VL * e), b1 = vload(b + 2 * VL * e + VL);
        for (int r = 0; r < rows; r++) {
            vf s = vsplat(a[r * lda + e]);
            acc[r][0] = s * b0 + acc[r][0];
            acc[r][1] = s * b1 + acc[r][1];
        }
    }
    for (int r = 0; r < rows; r++) { vstore(c + r * ldc, acc[r][0]); vstore(c + r * ldc + VL, acc[r][1]); }
}

// The same for 8 columns.
static inline __attribute__((always_inline)) void K(gemm_tile8)(const float *a, long lda, const float *b, long k,
                                                                float *c, long ldc, const int rows) {
    v8 acc[6] = {{0}};
    for (long e = 0; e < k; e++) {
        v8 b0 = load8(b + 8 * e);
        for (int r = 0; r < rows; r++) acc[r] = a[r * lda + e] * b0 + acc[r];
    }
    for (int r = 0; r < rows; r++) store8(c + r * ldc, acc[r]);
}

// A block of `rows` rows at column j: 2 vectors wide, or 8 columns past the last whole pair.
static inline __attribute__((always_inline)) void K(gemm_block)(const float *a, long lda, const float *b, long k,
                                                                float *c, long ldc, int pair, const int rows) {
    if (pair) K(gemm_tile)(a, lda, b, k, c, ldc, rows);
    else K(gemm_tile8)(a, lda, b, k, c, ldc, rows);
}

// Column panels outside, row blocks inside: a panel of B (k x 2 vectors) stays in L1 while A streams.
static void K(small_gemm)(long m, long n, long k, const float *a, long lda, const float *b, float *c, long ldc) {
    for (long j = 0; j < n; j += K(panel_width)(j, n)) {
        int pair = K(panel_width)(j, n) == 2 * VL;
        const float *panel = b + K(panel_index)(0, j, k, n);
        for (long i = 0; i < m; i += 6) {
            const float *ai = a + i * lda;
            float *ci = c + i * ldc + j;
            switch (m - i < 6 ? m - i : 6) {  // a constant row count in each inlined copy
            case 6: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 6); break;
            case 5: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 5); break;
            case 4: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 4); break;
            case 3: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 3); break;
            case 2: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 2); break;
            default: K(gemm_block)(ai, lda, panel, k, ci, ldc, pair, 1); break;
            }
        }
    }
}
