// Reductions with four vector accumulators (the order differs from a sequential sum by rounding only).

static float K(sum)(const float *x, long n) {
    vf a = {0}, b = {0}, c = {0}, d = {0};
    long i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        a += vload(x + i); b += vload(x + i + VL); c += vload(x + i + 2 * VL); d += vload(x + i + 3 * VL);
    }
    for (; i + VL <= n; i += VL) a += vload(x + i);
    float s = vsum((a + b) + (c + d));
    for (; i < n; i++) s += x[i];
    return s;
}

static float K(dot)(const float *x, const float *y, long n) {
    vf a = {0}, b = {0}, c = {0}, d = {0};
    long i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        a = vload(x + i) * vload(y + i) + a;
        b = vload(x + i + VL) * vload(y + i + VL) + b;
        c = vload(x + i + 2 * VL) * vload(y + i + 2 * VL) + c;
        d = vload(x + i + 3 * VL) * vload(y + i + 3 * VL) + d;
    }
    for (; i + VL <= n; i += VL) a = vload(x + i) * vload(y + i) + a;
    float s = vsum((a + b) + (c + d));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static float K(sum_squared_deviations)(const float *x, float m, long n) {
    vf a = {0}, b = {0};
    long i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        vf u = vload(x + i) - m, v = vload(x + i + VL) - m;
        a = u * u + a;
        b = v * v + b;
    }
    float s = vsum(a + b);
    for (; i < n; i++) { float u = x[i] - m; s += u * u; }
    return s;
}

// acc[j] += sum over i < rows of x[i ld + j], j < cols: the column sums of a row-major matrix (a
// linear layer's bias gradient). Blocks of 4 vectors of columns hold their sums in registers while
// the rows stream past; the last columns one vector at a time, then one at a time.
static void K(add_column_sums)(const float *x, long rows, long cols, long ld, float *acc) {
    long j = 0;
    for (; j + 4 * VL <= cols; j += 4 * VL) {
        vf a = {0}, b = {0}, c = {0}, d = {0};
        for (long i = 0; i < rows; i++) {
            const float *r = x + i * ld + j;
            a += vload(r); b += vload(r + VL); c += vload(r + 2 * VL); d += vload(r + 3 * VL);
        }
        vstore(acc + j, vload(acc + j) + a);
        vstore(acc + j + VL, vload(acc + j + VL) + b);
        vstore(acc + j + 2 * VL, vload(acc + j + 2 * VL) + c);
        vstore(acc + j + 3 * VL, vload(acc + j + 3 * VL) + d);
    }
    for (; j + VL <= cols; j += VL) {
        vf a = {0};
        for (long i = 0; i < rows; i++) a += vload(x + i * ld + j);
        vstore(acc + j, vload(acc + j) + a);
    }
    for (; j < cols; j++) {
        float s = 0;
        for (long i = 0; i < rows; i++) s += x[i * ld + j];
        acc[j] += s;
    }
}

// Four accumulators (a max's chain is as long as a sum's); a ragged end by one vector overlapping
// the last whole one, since max is idempotent.
static float K(maximum)(const float *x, long n) {
    if (n < VL) {
        float s = -__builtin_inff();
        for (long i = 0; i < n; i++) s = x[i] > s ? x[i] : s;
        return s;
    }
    vf a = vload(x), b = a, c = a, d = a;
    long i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        a = vmax(a, vload(x + i)); b = vmax(b, vload(x + i + VL));
        c = vmax(c, vload(x + i + 2 * VL)); d = vmax(d, vload(x + i + 3 * VL));
    }
    for (; i + VL <= n; i += VL) a = vmax(a, vload(x + i));
    if (i < n) b = vmax(b, vload(x + n - VL));
    return vmaxlane(vmax(vmax(a, b), vmax(c, d)));
}
