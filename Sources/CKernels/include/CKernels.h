// swift-ddpm's hot kernels in C, one set per instruction set, picked once per process from the CPU.
//
// Swift has no per-function target attribute, and a package that others depend on may not pass
// -target-cpu, so every kernel that wants AVX2 or AVX-512 lives here: each family (family/*.h) is
// written once over a vector of VL floats and compiled three times, under
// __attribute__((target("avx512f,..."))) with VL 16, under target("avx2,fma") with VL 8, and plain
// with VL 8 (SSE2 on x86-64, NEON on AArch64). ddpm_kernels() fills one table at first use from
// __builtin_cpu_supports, or from DDPM_KERNELS (portable, avx2, avx512), which can only lower the
// choice. The kernels know nothing of dispatch; Swift (Tensors/Kernels) plans layouts and threads
// and calls them through the table. Naive twins stay in Swift, and the tests hold every set the CPU
// can run against them.
#ifndef DDPM_CKERNELS_H
#define DDPM_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// The floats from one plane of Winograd's transformed tiles (V, M: [side^2, tiles, channels8]) or
/// kernels (U, dU: [side^2, in8, out8]) to the next, for `floats` in a plane: whole 64-byte lines,
/// an odd number of them. The transforms read or write one vector in each of the side^2 planes in
/// turn; planes a multiple of 4 KB apart (F(4x4) at 14 x 14 and 64 channels, or 7 x 7 and 256, and
/// every U) fell in one set of the L1 cache, and the output transform ran 2.5-3.5x slower.
static inline long ddpm_winograd_plane(long floats) { return ((floats + 15) / 16 | 1) * 16; }

/// Where one input plane's pixels go in a convolution's column matrix (im2col): the plane, the
/// kernel, its stride and leading padding, and the output plane.
typedef struct ddpm_patches {
    long height, width, kernel_height, kernel_width, stride, pad_top, pad_left, out_height, out_width;
} ddpm_patches;

typedef struct ddpm_kernel_set {
    /// "avx512", "avx2+fma" or "portable".
    const char *_Nonnull name;
    /// Floats per vector (VL): 16 or 8.
    long vector_floats;
    /// 12 independent chains of `iterations` vector FMAs (24 VL FLOPs an iteration): the set's peak,
    /// measured (`ddpm info`). Returns a value that depends on every chain.
    float (*_Nonnull fma_loop)(long iterations);

    // Direct 3x3 convolution on bordered planes (Tensors/Kernels/DirectConv.swift has the layout).
    /// Output floats of one register tile: 3 VL with 32 registers, else 2 VL (one image per pixel),
    /// and 2 VL (8 images per pixel).
    long conv_tile, conv_interleaved_tile;
    /// out[r, 0 ..< conv_tile] (+)= sum over c < channels and taps (i, j) of w[c, 3 i + j, r]
    /// planes[c stride + i pitch + j], r < 4; w packed [channels, 9, 4].
    void (*_Nonnull conv3x3_tile)(const float *_Nonnull planes, long stride, long pitch, long channels,
                                  const float *_Nonnull w, float *_Nonnull out, long out_stride, int accumulate);
    /// The same with 8 images side by side in each pixel: taps at i pitch + 8 j, conv_interleaved_tile floats.
    void (*_Nonnull conv3x3_interleaved_tile)(const float *_Nonnull planes, long stride, long pitch, long channels,
                                              const float *_Nonnull w, float *_Nonnull out, long out_stride, int accumulate);
    /// acc[3 r + j] += sum over p < planes, q < count of d_r[p stride + q] x[p stride + q + j lanes];
    /// count a multiple of VL.
    void (*_Nonnull conv3x3_correlate)(const float *_Nonnull d0, const float *_Nonnull d1, const float *_Nonnull d2,
                                       const float *_Nonnull d3, const float *_Nonnull x, long lanes, long count,
                                       long planes, long stride, float *_Nonnull acc);

    // Winograd F(2x2, 3x3) transforms (Tensors/Kernels/WinogradConv.swift), channels last: those
    // into V a vector (VL) of channels per step, the output and kernel transforms 8. The planes of v
    // and m lie `ddpm_winograd_plane(tiles channels8)` floats apart (below).
    /// One image [c, h, w] into [ph, pw, cp], channels last, one zero row and column before it,
    /// zero after it and in the padding channels.
    void (*_Nonnull channels_last_bordered)(const float *_Nonnull x, long channels, long height, long width,
                                            float *_Nonnull padded, long padded_height, long padded_width,
                                            long channels8);
    /// v[xi][t][k] = (B^T d B)[xi] for every 4x4 block d of the channels-last padded images.
    void (*_Nonnull winograd_input)(const float *_Nonnull padded, long images, long tiles_y, long tiles_x,
                                    long padded_height, long padded_width, long channels8, float *_Nonnull v);
    /// y (+)= A^T m A + bias, y [images, out_channels, height, width]; image i's bias (out8 floats)
    /// at bias8 + i bias_stride (stride 0: one bias for all).
    void (*_Nonnull winograd_output)(const float *_Nonnull m, long images, long tiles_y, long tiles_x, long out8,
                                     const float *_Nonnull bias8, long bias_stride, long out_channels, long height, long width,
                                     int accumulate, float *_Nonnull y);
    // The same for F(4x4, 3x3): 6x6 blocks, 36 planes of v and m, 4x4 outputs per tile.
    void (*_Nonnull winograd4_input)(const float *_Nonnull padded, long images, long tiles_y, long tiles_x,
                                     long padded_height, long padded_width, long channels8, float *_Nonnull v);
    void (*_Nonnull winograd4_output)(const float *_Nonnull m, long images, long tiles_y, long tiles_x, long out8,
                                      const float *_Nonnull bias8, long bias_stride, long out_channels, long height,
                                      long width, int accumulate, float *_Nonnull y);
    /// The kernel transform for input channels a0 ..< a1 of the pass: u[xi][a][b] (planes of in8 x
    /// out8 packed in column panels for `small_gemm`) = (G k G^T)[xi], G `side` rows of 3, for the
    /// 3x3 kernel k from input a to output b: k[t] = w[(b channels + a) 9 + t], or, flipped (the
    /// backward data pass, from dy's channels to dx's), w[(a channels + b) 9 + 8 - t]; zero in the
    /// padding outputs.
    void (*_Nonnull winograd_weights)(const float *_Nonnull w, long channels, long outputs, int flipped,
                                      const float *_Nonnull g, long side, long in8, long out8, long a0, long a1,
                                      float *_Nonnull u);
    /// Its adjoint, for the weight gradient: dw[b, a] += G^T du[:, a, b] G for input channels a0 ..< a1
    /// and every output b < outputs, du [side^2, in8, out8] (row-major planes), dw [outputs,
    /// channels, 3, 3].
    void (*_Nonnull winograd_weights_adjoint)(const float *_Nonnull du, long channels, long outputs,
                                              const float *_Nonnull g, long side, long in8, long out8, long a0,
                                              long a1, float *_Nonnull dw);
    /// For the weight gradient, the adjoint of the output transforms: v[xi][t][k] = (A dY A^T)[xi] for
    /// every 2x2 (F(2x2)) or 4x4 (F(4x4)) block dY of the channels-last padded dy, zero past the image.
    void (*_Nonnull winograd_output_adjoint)(const float *_Nonnull padded, long images, long tiles_y, long tiles_x,
                                             long padded_height, long padded_width, long channels8, float *_Nonnull v);
    void (*_Nonnull winograd4_output_adjoint)(const float *_Nonnull padded, long images, long tiles_y, long tiles_x,
                                              long padded_height, long padded_width, long channels8, float *_Nonnull v);
    /// c = a b for a [m, k] and c [m, n] row-major with leading dimensions, n a multiple of 8, and b
    /// [k, n] packed in column panels as `pack_panels` and `winograd_weights` write it (Winograd's
    /// products; family/gemm.h).
    void (*_Nonnull small_gemm)(long m, long n, long k, const float *_Nonnull a, long lda,
                                const float *_Nonnull panels, float *_Nonnull c, long ldc);
    /// b [k, n] (row-major, n a multiple of 8) packed for `small_gemm`: panels of 2 vectors' columns,
    /// then of 8, each panel's rows one after another.
    void (*_Nonnull pack_panels)(const float *_Nonnull b, long ldb, long k, long n, float *_Nonnull panels);

    /// y[c ldy + r] (+)= scale x[r ldx + c], r < rows, c < cols (family/layout.h): attention's heads
    /// and `transposeBatched`.
    void (*_Nonnull transpose)(const float *_Nonnull x, long ldx, long rows, long cols, float scale,
                               float *_Nonnull y, long ldy, int accumulate);
    /// One plane's kh kw rows of a column matrix, row (i, j) at columns + (i kw + j) ld: the input
    /// pixel under tap (i, j) for each output pixel, 0 in the padding (Tensors/Kernels/Conv2d.swift).
    void (*_Nonnull im2col_plane)(const float *_Nonnull x, const ddpm_patches *_Nonnull p, float *_Nonnull columns,
                                  long ld);
    /// Its adjoint: the rows added back onto the plane x.
    void (*_Nonnull col2im_plane)(const float *_Nonnull columns, long ld, const ddpm_patches *_Nonnull p,
                                  float *_Nonnull x);
    /// The direct convolution's bordered plane of `present` <= lanes images (Tensors/Kernels/DirectConv.swift):
    /// pixel (y, x) of image l (at src + l image_stride) at (y + 1) pitch + (x + 1) lanes + l,
    /// pitch = (w + 1) lanes, zero elsewhere in its `stride` floats.
    void (*_Nonnull border_plane)(const float *_Nonnull src, long image_stride, long present, long h, long w,
                                  long lanes, float *_Nonnull dst, long stride);

    // Small-head attention (Tensors/Kernels/Attention.swift).
    /// rowN[j] = sum_e qN[e] kt[e l + j], j < l; maxima[N] = max_j rowN[j].
    void (*_Nonnull attention_score_rows)(const float *_Nonnull q0, const float *_Nonnull q1, const float *_Nonnull kt,
                                          long length, long head_dim, float *_Nonnull row0, float *_Nonnull row1,
                                          float *_Nonnull maxima);
    /// rowN[j] = exp(sum_e qN[e] kt[e l + j] - shifts[N]), j < l: probabilities again, from each
    /// row's log-sum-exp.
    void (*_Nonnull attention_probability_rows)(const float *_Nonnull q0, const float *_Nonnull q1,
                                                const float *_Nonnull kt, long length, long head_dim,
                                                const float *_Nonnull shifts, float *_Nonnull row0,
                                                float *_Nonnull row1);
    /// outN[e] = dot(pN, vt[e l ...]), e < d.
    void (*_Nonnull attention_weighted_rows)(const float *_Nonnull p0, const float *_Nonnull p1, const float *_Nonnull vt,
                                             long length, long head_dim, float *_Nonnull out0, float *_Nonnull out1);
    /// The forward pass's softmax and weighted sum in one: sN[j] = exp(sN[j] - maxima[N]) in place,
    /// sums[N] = sum_j sN[j], then outN[e] = dot(sN, vt[e l ...]) / sums[N], e < d.
    void (*_Nonnull attention_softmax_rows)(float *_Nonnull s0, float *_Nonnull s1, const float *_Nonnull maxima,
                                            const float *_Nonnull vt, long length, long head_dim,
                                            float *_Nonnull out0, float *_Nonnull out1, float *_Nonnull sums);
    /// t[e, j] = scale sum_i a[i sa + e] b[i sb + j], e < d, j < l.
    void (*_Nonnull attention_outer_product_sum)(const float *_Nonnull a, long sa, const float *_Nonnull b, long sb,
                                                 long rows, long head_dim, long length, float scale, float *_Nonnull t);
    /// Softmax of one row in place.
    void (*_Nonnull softmax_row)(float *_Nonnull row, long n);
    /// g = y (g - dot(y, g)) in place.
    void (*_Nonnull softmax_backward_row)(const float *_Nonnull y, float *_Nonnull g, long n);

    // Elementwise and reductions.
    /// y = silu(x scale + shift).
    void (*_Nonnull silu_affine)(const float *_Nonnull x, float scale, float shift, float *_Nonnull y, long n);
    /// d (+)= dy silu'(x scale + shift), silu'(v) = s (1 + v (1 - s)), s = sigmoid(v).
    void (*_Nonnull silu_affine_backward)(const float *_Nonnull x, float scale, float shift, const float *_Nonnull dy,
                                          float *_Nonnull d, long n, int accumulate);
    /// y (+)= a d + b (x - m) + c: a normalisation's input gradient from the gradient d of its
    /// normalised values, x and its mean m.
    void (*_Nonnull norm_backward_dx)(const float *_Nonnull d, const float *_Nonnull x, float a, float b, float m,
                                      float c, float *_Nonnull y, long n, int accumulate);
    float (*_Nonnull sum)(const float *_Nonnull x, long n);
    float (*_Nonnull dot)(const float *_Nonnull x, const float *_Nonnull y, long n);
    /// sum (x[i] - m)^2.
    float (*_Nonnull sum_squared_deviations)(const float *_Nonnull x, float m, long n);
    /// acc[j] += sum over i < rows of x[i ld + j], j < cols.
    void (*_Nonnull add_column_sums)(const float *_Nonnull x, long rows, long cols, long ld, float *_Nonnull acc);

    /// Inverted dropout of n elements that start at element `first` of the tensor: element i's
    /// uniform is u = (splitmix64(key, i) >> 40) 2^-24, its mask 0 where u < p and 1 / (1 - p)
    /// elsewhere, and y (+)= x mask (the forward pass from x, the backward from dy).
    void (*_Nonnull dropout)(const float *_Nonnull x, float p, uint64_t key, long first, float *_Nonnull y, long n,
                             int accumulate);

    // The optimiser.
    /// One AdamW update of n parameters p from their gradients g: m = b1 m + (1 - b1) g and
    /// v = b2 v + (1 - b2) g^2 in place, then p = p decay - step m / (sqrt(v) / c2 + eps).
    void (*_Nonnull adamw_step)(float *_Nonnull p, const float *_Nonnull g, float *_Nonnull m, float *_Nonnull v, long n,
                                float b1, float b2, float decay, float step, float c2, float eps);
} ddpm_kernel_set;

/// The set this process uses, chosen at the first call.
const ddpm_kernel_set *_Nonnull ddpm_kernels(void);

/// The sets this CPU can run, best first: `*count` of them.
const ddpm_kernel_set *_Nonnull const *_Nonnull ddpm_kernel_sets_available(int *_Nonnull count);

/// Why the active set was chosen (the CPU's features, or DDPM_KERNELS).
const char *_Nonnull ddpm_kernels_reason(void);

// The kernels' thread pool (pool.c): workers that spin between the parallel loops of a pass.

/// One index of a parallel loop.
typedef void (*ddpm_job)(void *_Nullable context, long index);

/// Runs job(context, i) for i < count on `threads` threads (the caller and threads - 1 workers,
/// started at the first call) and returns 1; returns 0 without running anything when another
/// loop holds the pool (a nested or concurrent call) or count is over 65535.
int ddpm_parallel_run(int threads, long count, ddpm_job _Nonnull job, void *_Nullable context);

/// Returns *counter and adds 1 to it, atomically: the next piece of a loop whose workers keep their
/// own scratch and claim pieces in turn.
long ddpm_claim(long *_Nonnull counter);

// OpenBLAS, loaded at first use with dlopen after OPENBLAS_CORETYPE is set from the CPU's features
// (unless the user set it): Debian's OpenBLAS 0.3.21 falls back to its oldest kernel on CPUs it
// does not know (Emerald Rapids: Prescott, 5x slower sgemm), and the variable is read only when
// the library initialises, which for a linked library is before main.

/// C = alpha op(A) op(B) + beta C, row-major (cblas_sgemm), single-threaded.
void ddpm_sgemm(int transpose_a, int transpose_b, long m, long n, long k, float alpha,
                const float *_Nonnull a, long lda, const float *_Nonnull b, long ldb,
                float beta, float *_Nonnull c, long ldc);

/// OpenBLAS's name for the kernel it runs (openblas_get_corename), e.g. "SkylakeX", "Haswell".
const char *_Nonnull ddpm_blas_core(void);

/// How the core was chosen: "set by OPENBLAS_CORETYPE", "chosen from the CPU", or "OpenBLAS's own detection".
const char *_Nonnull ddpm_blas_core_reason(void);

#endif
