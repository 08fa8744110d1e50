// Moving data: transposes (attention's heads, a batch of [R, C] matrices into [C, R]), the
// column matrix of a convolution that goes through a matrix product (im2col) and its adjoint, and
// the direct convolution's bordered planes.

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

// The output columns ox whose input column ox stride + j - pad_left lies inside the plane: lo ..< hi.
static inline void K(valid_columns)(const ddpm_patches *p, long j, long *lo, long *hi) {
    long first = p->pad_left - j, end = p->width + p->pad_left - j;  // ox stride in first ..< end
    long a = first > 0 ? (first + p->stride - 1) / p->stride : 0;
    long b = end > 0 ? (end + p->stride - 1) / p->stride : 0;
    *lo = a < p->out_width ? a : p->out_width;
    *hi = b < *lo ? *lo : b < p->out_width ? b : p->out_width;
}

// Row (i, j) of one plane's block of the column matrix, at columns + (i kw + j) ld, holds the input
// pixel under tap (i, j) for every output pixel, 0 in the padding. Rows of the plane go as straight
// copies at stride 1; at stride 2 the compiler turns the every-other-float gather into shuffles.
// The rows are short (4 to 32 floats), so the loops stay loops (no_builtin): as calls to memcpy
// and memset, a 4x4 plane's 3-float copies cost more than the copying.
__attribute__((no_builtin("memcpy", "memset")))
static void K(im2col_plane)(const float *x, const ddpm_patches *p, float *columns, long ld) {
    long oh = p->out_height, ow = p->out_width, s = p->stride;
    for (long i = 0; i < p->kernel_height; i++)
        for (long j = 0; j < p->kernel_width; j++) {
            float *row = columns + (i * p->kernel_width + j) * ld;
            long lo, hi;
            K(valid_columns)(p, j, &lo, &hi);
            for (long oy = 0; oy < oh; oy++) {
                long iy = oy * s + i - p->pad_top;
                float *d = row + oy * ow;
                if (iy < 0 || iy >= p->height) {
                    for (long ox = 0; ox < ow; ox++) d[ox] = 0;
                    continue;
                }
                const float *src = x + iy * p->width + j - p->pad_left;
                for (long ox = 0; ox < lo; ox++) d[ox] = 0;
                if (s == 1) for (long ox = lo; ox < hi; ox++) d[ox] = src[ox];
                else if (s == 2) for (long ox = lo; ox < hi; ox++) d[ox] = src[2 * ox];
                else for (long ox = lo; ox < hi; ox++) d[ox] = src[ox * s];
                for (long ox = hi; ox < ow; ox++) d[ox] = 0;
            }
        }
}

// Its adjoint: x[input pixel under tap (i, j)] += row (i, j) at each output pixel.
static void K(col2im_plane)(const float *columns, long ld, const ddpm_patches *p, float *x) {
    long oh = p->out_height, ow = p->out_width, s = p->stride;
    for (long i = 0; i < p->kernel_height; i++)
        for (long j = 0; j < p->kernel_width; j++) {
            const float *row = columns + (i * p->kernel_width + j) * ld;
            long lo, hi;
            K(valid_columns)(p, j, &lo, &hi);
            for (long oy = 0; oy < oh; oy++) {
                long iy = oy * s + i - p->pad_top;
                if (iy < 0 || iy >= p->height) continue;
                const float *d = row + oy * ow;
                float *dst = x + iy * p->width + j - p->pad_left;
                if (s == 1) for (long ox = lo; ox < hi; ox++) dst[ox] += d[ox];
                else if (s == 2) for (long ox = lo; ox < hi; ox++) dst[2 * ox] += d[ox];
                else for (long ox = lo; ox < hi; ox++) dst[ox * s] += d[ox];
            }
        }
}

// One bordered plane of the direct convolution: pixel (y, x) of image `lane` < present (its [h, w]
// plane at src + lane image_stride) at (y + 1) pitch + (x + 1) lanes + lane, with pitch =
// (w + 1) lanes; zero elsewhere in the plane's `stride` floats. With all lanes present, only what
// the pixels leave is zeroed: the top row, each row's first pixel, and what follows the last row.
// One image's rows are vector copies (the last vector overlapping the one before); 8 images are
// interleaved by the transpose. The short fills and copies stay loops, as in im2col_plane.
__attribute__((no_builtin("memcpy", "memset")))
static void K(border_plane)(const float *src, long image_stride, long present, long h, long w, long lanes,
                            float *dst, long stride) {
    long pitch = (w + 1) * lanes, origin = pitch + lanes;
    if (present < lanes) {
        for (long i = 0; i < stride; i++) dst[i] = 0;
    } else {
        for (long i = 0; i < origin; i++) dst[i] = 0;
        for (long y = 1; y < h; y++)
            for (long l = 0; l < lanes; l++) dst[(y + 1) * pitch + l] = 0;
        for (long i = (h + 1) * pitch; i < stride; i++) dst[i] = 0;
    }
    if (lanes > 1) {
        for (long y = 0; y < h; y++)
            K(transpose)(src + y * w, image_stride, present, w, 1, dst + origin + y * pitch, lanes, 0);
        return;
    }
    for (long y = 0; y < h; y++) {
        const float *s = src + y * w;
        float *d = dst + origin + y * pitch;
        if (w < VL) {
            for (long x = 0; x < w; x++) d[x] = s[x];
            continue;
        }
        for (long x = 0; x < w; x += VL) {
            long at = x + VL <= w ? x : w - VL;
            vstore(d + at, vload(s + at));
        }
    }
}
