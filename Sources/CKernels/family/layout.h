// Moving data: transposes (attention's heads, a batch of [R, C] matrices into [C, R]).

// The 8x8 block of floats in r[0..7] (rows) transposed in place, by three rounds of shuffles.
static inline void K(transpose8)(v8 r[8]) {
    v8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 2 * j + 1] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; j++) {
        r[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}


// y[c ldy + r] (+)= scale x[r ldx + c], r < rows, c < cols: blocks of 8 rows x 8 columns go
// through one transpose, the edges float by float.
static void K(transpose)(const float *x, long ldx, long rows, long cols, float scale, float *y, long ldy,
                         int accumulate) {
    long r = 0;
    for (; r + 8 <= rows; r += 8) {
        long c = 0;
        for (; c + 8 <= cols; c += 8) {
            v8 block[8];
            for (int i = 0; i < 8; i++) block[i] = load8(x + (r + i) * ldx + c) * scale;
            K(transpose8)(block);
            for (int i = 0; i < 8; i++) {
                float *out = y + (c + i) * ldy + r;
                store8(out, accumulate ? load8(out) + block[i] : block[i]);
            }
        }
        for (; c < cols; c++)
            for (long i = r; i < r + 8; i++)
                y[c * ldy + i] = (accumulate ? y[c * ldy + i] : 0) + scale * x[i * ldx + c];
    }
    for (; r < rows; r++)
        for (long c = 0; c < cols; c++)
            y[c * ldy + r] = (accumulate ? y[c * ldy + r] : 0) + scale * x[r * ldx + c];
}
