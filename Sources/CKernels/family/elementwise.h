// SiLU, optionally after an affine map (GroupNorm's scale and shift fused in): y = v sigmoid(v),
// v = x scale + shift, and its gradient s (1 + v (1 - s)).

static void K(silu_affine)(const float *x, float scale, float shift, float *y, long n) {
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vf v = vload(x + i) * scale + shift;
        vstore(y + i, v / (1.0f + vexp(-v)));
    }
    for (; i < n; i++) {
        float v = x[i] * scale + shift;
        y[i] = v / (1.0f + sexp(-v));
    }
}

static void K(silu_affine_backward)(const float *x, float scale, float shift, const float *dy, float *d, long n,
                                    int accumulate) {
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vf v = vload(x + i) * scale + shift;
        vf s = 1.0f / (1.0f + vexp(-v));
        vf g = vload(dy + i) * s * (1.0f + v * (1.0f - s));
        vstore(d + i, accumulate ? vload(d + i) + g : g);
    }
    for (; i < n; i++) {
        float v = x[i] * scale + shift;
        float s = 1.0f / (1.0f + sexp(-v));
        float g = dy[i] * s * (1.0f + v * (1.0f - s));
        d[i] = accumulate ? d[i] + g : g;
    }
}

static void K(norm_backward_dx)(const float *d, const float *x, float a, float b, float m, float c, float *y, long n,
                                int accumulate) {
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vf g = vload(d + i) * a + (vload(x + i) - m) * b + c;
        vstore(y + i, accumulate ? vload(y + i) + g : g);
    }
    for (; i < n; i++) {
        float g = d[i] * a + (x[i] - m) * b + c;
        y[i] = accumulate ? y[i] + g : g;
    }
}

// row = exp(row - shift) in place, the shift at least the row's largest (vexp_nonpositive);
// returns the row's sum. A row of at least one vector ends with one more vector that overlaps the
// last whole one: its exponentials are taken before the whole vectors are overwritten, and stored
// after them (the overlapping lanes get the same values again); the sum counts only its lanes past
// the whole vectors. Shorter rows go lane by lane.
static float K(exp_shift_row)(float *row, long n, float shift) {
    if (n < VL) {
        float s = 0;
        for (long i = 0; i < n; i++) { row[i] = sexp_nonpositive(row[i] - shift); s += row[i]; }
        return s;
    }
    long whole = n / VL * VL;
    vf tail = vexp_nonpositive(vload(row + n - VL) - shift);
    vf total = tail * vlast(n - whole);
    for (long i = 0; i < whole; i += VL) {
        vf e = vexp_nonpositive(vload(row + i) - shift);
        vstore(row + i, e);
        total += e;
    }
    vstore(row + n - VL, tail);
    return vsum(total);
}

static void K(softmax_row)(float *row, long n) {
    float inv = 1.0f / K(exp_shift_row)(row, n, K(maximum)(row, n));
    long i = 0;
    for (; i + VL <= n; i += VL) vstore(row + i, vload(row + i) * inv);
    for (; i < n; i++) row[i] *= inv;
}

static void K(softmax_backward_row)(const float *y, float *g, long n) {
    float yg = K(dot)(y, g, n);
    long i = 0;
    for (; i + VL <= n; i += VL) vstore(g + i, vload(y + i) * (vload(g + i) - yg));
    for (; i < n; i++) g[i] = y[i] * (g[i] - yg);
}

// Word i of the SplitMix64 stream keyed by `key` (Steele, Lea & Flood), as RandomGenerator's
// splitMix64 computes it: z = key + i golden, then this finaliser, on one 64-bit integer or a
// vector of them. A hash of (key, i), so that each element's word stands on its own.
#define SPLITMIX64_FINISH(z)                          \
    do {                                              \
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;  \
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;  \
        z = z ^ (z >> 31);                            \
    } while (0)
#define SPLITMIX64_GOLDEN 0x9E3779B97F4A7C15ull
typedef uint64_t vq __attribute__((vector_size(VL * 4)));  // VL / 2 lanes
typedef int32_t vh __attribute__((vector_size(VL * 2)));   // VL / 2 lanes

// Dropout a vector of elements at a time: the 24 high bits of each element's word, in two halves
// of 64-bit lanes, narrowed to 32 and converted to floats exactly, so that u < p decides as the
// scalar definition does. The mask is never stored: the backward pass hashes it again.
static void K(dropout)(const float *x, float p, uint64_t key, long first, float *y, long n, int accumulate) {
    const float keep = 1.0f / (1.0f - p);
    vq lanes;
    for (int j = 0; j < VL / 2; j++) lanes[j] = (uint64_t)j;
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vq index = lanes + (uint64_t)(first + i);
        vq lo = key + index * SPLITMIX64_GOLDEN, hi = key + (index + VL / 2) * SPLITMIX64_GOLDEN;
        SPLITMIX64_FINISH(lo);
        SPLITMIX64_FINISH(hi);
        vh top[2] = {__builtin_convertvector(lo >> 40, vh), __builtin_convertvector(hi >> 40, vh)};
        vi bits;
        memcpy(&bits, top, sizeof bits);
        vf u = __builtin_convertvector(bits, vf) * 0x1p-24f;
        vf m = (vf)(~(u < p) & (vi)vsplat(keep));
        vf out = vload(x + i) * m;
        vstore(y + i, accumulate ? vload(y + i) + out : out);
    }
    for (; i < n; i++) {
        uint64_t z = key + (uint64_t)(first + i) * SPLITMIX64_GOLDEN;
        SPLITMIX64_FINISH(z);
        float u = (float)(z >> 40) * 0x1p-24f;
        float out = x[i] * (u < p ? 0 : keep);
        y[i] = accumulate ? y[i] + out : out;
    }
}

// One AdamW update (decoupled weight decay, as PyTorch's AdamW computes it), the learning rate and
// bias corrections folded in by the caller: decay = 1 - lr wd, step = lr / (1 - b1^t),
// c2 = sqrt(1 - b2^t). Seven floats move per parameter, and the square root and division go a
// vector at a time: cifar10's training step spent 82 ms outside its ops with a scalar Swift loop
// here (`ddpm bench --preset cifar10 --batch-size 16 --profile`), and 42 with this.
static void K(adamw_step)(float *p, const float *g, float *m, float *v, long n, float b1, float b2, float decay,
                          float step, float c2, float eps) {
    long i = 0;
    for (; i + VL <= n; i += VL) {
        vf gi = vload(g + i);
        vf mi = b1 * vload(m + i) + (1 - b1) * gi;
        vf vi = b2 * vload(v + i) + (1 - b2) * gi * gi;
        vstore(m + i, mi);
        vstore(v + i, vi);
        vstore(p + i, vload(p + i) * decay - step * mi / (__builtin_elementwise_sqrt(vi) / c2 + eps));
    }
    for (; i < n; i++) {
        float mi = b1 * m[i] + (1 - b1) * g[i];
        float vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (__builtin_sqrtf(vi) / c2 + eps);
    }
}
