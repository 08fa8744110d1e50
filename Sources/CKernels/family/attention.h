// Small-head attention microkernels: K^T and V^T are [d, L] so every inner loop runs over L
// contiguous floats, and query rows go two at a time so that each vector of K^T or V^T serves both.

// Two rows of scores, 4 vectors of keys x 2 rows in eight registers, then single vectors (the last
// overlapping the one before), then scalars when L is under one vector. Without `shifts`, each
// row's largest score goes into maxima[0] and maxima[1] on the way (softmax's first pass); with
// them (the backward pass, which knows each row's log-sum-exp), the rows receive the
// probabilities exp(score - shifts[N]) straight from the registers.
static inline __attribute__((always_inline)) void K(score_rows)(const float *q0, const float *q1, const float *kt,
                                                                long l, long d, const float *shifts, float *row0,
                                                                float *row1, float *maxima) {
    vf m0 = vsplat(-__builtin_inff()), m1 = m0;
    float shift0 = shifts ? shifts[0] : 0, shift1 = shifts ? shifts[1] : 0;
    long j = 0;
    for (; j + 4 * VL <= l; j += 4 * VL) {
        vf a[4] = {{0}}, b[4] = {{0}};
        for (long e = 0; e < d; e++) {
            const float *k = kt + e * l + j;
            vf x = vsplat(q0[e]), y = vsplat(q1[e]);
            for (int v = 0; v < 4; v++) {
                vf kv = vload(k + v * VL);
                a[v] = x * kv + a[v];
                b[v] = y * kv + b[v];
            }
        }
        for (int v = 0; v < 4; v++) {
            if (shifts) {
                a[v] = vexp_nonpositive(a[v] - shift0); b[v] = vexp_nonpositive(b[v] - shift1);
            } else {
                m0 = vmax(m0, a[v]); m1 = vmax(m1, b[v]);
            }
            vstore(row0 + j + v * VL, a[v]); vstore(row1 + j + v * VL, b[v]);
        }
    }
    while (j < l && l >= VL) {
        if (j > l - VL) j = l - VL;
        vf a = {0}, b = {0};
        for (long e = 0; e < d; e++) {
            vf kv = vload(kt + e * l + j);
            a = q0[e] * kv + a;
            b = q1[e] * kv + b;
        }
        if (shifts) {
            a = vexp_nonpositive(a - shift0); b = vexp_nonpositive(b - shift1);
        } else {
            m0 = vmax(m0, a); m1 = vmax(m1, b);
        }
        vstore(row0 + j, a); vstore(row1 + j, b);
        j += VL;
    }
    float max0 = vmaxlane(m0), max1 = vmaxlane(m1);
    for (; j < l; j++) {
        float a = 0, b = 0;
        for (long e = 0; e < d; e++) { a += q0[e] * kt[e * l + j]; b += q1[e] * kt[e * l + j]; }
        if (shifts) {
            a = sexp_nonpositive(a - shift0); b = sexp_nonpositive(b - shift1);
        } else {
            max0 = a > max0 ? a : max0; max1 = b > max1 ? b : max1;
        }
        row0[j] = a; row1[j] = b;
    }
    if (!shifts) { maxima[0] = max0; maxima[1] = max1; }
}

static void K(attention_score_rows)(const float *q0, const float *q1, const float *kt, long l, long d,
                                    float *row0, float *row1, float *maxima) {
    K(score_rows)(q0, q1, kt, l, d, 0, row0, row1, maxima);
}

static void K(attention_probability_rows)(const float *q0, const float *q1, const float *kt, long l, long d,
                                          const float *shifts, float *row0, float *row1) {
    K(score_rows)(q0, q1, kt, l, d, shifts, row0, row1, 0);
}

// Two rows of outputs, four columns of V^T x 2 rows at a time; a ragged end of L by one more
// vector overlapping the last whole one, its already summed lanes masked out.
static void K(attention_weighted_rows)(const float *p0, const float *p1, const float *vt, long l, long d,
                                       float *out0, float *out1) {
    long whole = l / VL * VL;
    vf mask = vlast(l - whole);
    long e = 0;
    for (; e + 4 <= d && l >= VL; e += 4) {
        vf a[4] = {{0}}, b[4] = {{0}};
        for (long j = 0; j < whole; j += VL) {
            vf x = vload(p0 + j), y = vload(p1 + j);
            for (int c = 0; c < 4; c++) {
                vf t = vload(vt + (e + c) * l + j);
                a[c] = x * t + a[c];
                b[c] = y * t + b[c];
            }
        }
        if (whole < l) {
            long j = l - VL;
            vf x = vload(p0 + j) * mask, y = vload(p1 + j) * mask;
            for (int c = 0; c < 4; c++) {
                vf t = vload(vt + (e + c) * l + j);
                a[c] = x * t + a[c];
                b[c] = y * t + b[c];
            }
        }
        for (int c = 0; c < 4; c++) { out0[e + c] = vsum(a[c]); out1[e + c] = vsum(b[c]); }
    }
    for (; e < d; e++) {
        out0[e] = K(dot)(p0, vt + e * l, l);
        out1[e] = K(dot)(p1, vt + e * l, l);
    }
}

// The forward pass's softmax and weighted sum for two rows of scores, in one call: each row's
// exponentials in a pass of its own, then the weighted sums, divided by the exponentials' sums at
// the end (d divisions instead of L). (Taking the exponentials inside the weighted sum's first
// block of columns instead, as FlashAttention does, ran slower on Zen 5: 0.30-0.31 of
// small_gemm's perf samples against 0.27.)
static void K(attention_softmax_rows)(float *s0, float *s1, const float *maxima, const float *vt, long l, long d,
                                      float *out0, float *out1, float *sums) {
    sums[0] = K(exp_shift_row)(s0, l, maxima[0]);
    sums[1] = K(exp_shift_row)(s1, l, maxima[1]);
    K(attention_weighted_rows)(s0, s1, vt, l, d, out0, out1);
    float inv0 = 1.0f / sums[0], inv1 = 1.0f / sums[1];
    for (long e = 0; e < d; e++) { out0[e] *= inv0; out1[e] *= inv1; }
}

// Blocks of 4 x 2 vectors accumulate over all rows, each step 6 loads for 8 FMAs; a last partial
// block of columns overlaps the one before.
static void K(attention_outer_product_sum)(const float *a, long sa, const float *b, long sb, long rows, long d,
                                           long l, float scale, float *t) {
    long e = 0;
    for (; e + 4 <= d && l >= 2 * VL; e += 4) {
        for (long j = 0; j < l; j += 2 * VL) {
            long jj = j < l - 2 * VL ? j : l - 2 * VL;
            vf acc[4][2] = {{{0}}};
            for (long i = 0; i < rows; i++) {
                const float *ar = a + i * sa + e, *br = b + i * sb + jj;
                vf x = vload(br), y = vload(br + VL);
                for (int c = 0; c < 4; c++) {
                    vf s = vsplat(ar[c]);
                    acc[c][0] = s * x + acc[c][0];
                    acc[c][1] = s * y + acc[c][1];
                }
            }
            for (int c = 0; c < 4; c++) {
                vstore(t + (e + c) * l + jj, acc[c][0] * scale);
                vstore(t + (e + c) * l + jj + VL, acc[c][1] * scale);
            }
        }
    }
    for (; e < d; e++) {  // rows of t left over (d not a multiple of 4, or L under two vectors)
        float *te = t + e * l;
        for (long j = 0; j < l; j++) te[j] = 0;
        for (long i = 0; i < rows; i++) {
            float c = scale * a[i * sa + e];
            const float *br = b + i * sb;
            for (long j = 0; j < l; j++) te[j] += c * br[j];
        }
    }
}
