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

static float K(maximum)(const float *x, long n) {
    vf m = vsplat(-__builtin_inff());
    long i = 0;
    for (; i + VL <= n; i += VL) m = __builtin_elementwise_max(m, vload(x + i));
    if (i < n && n >= VL) m = __builtin_elementwise_max(m, vload(x + n - VL));  // overlaps: max is idempotent
    else
        for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float s = -__builtin_inff();
    for (int k = 0; k < VL; k++) s = m[k] > s ? m[k] : s;
    return s;
}
