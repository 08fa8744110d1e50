// Compiles every family for the set named by SET (avx512, avx2, portable) with VL floats per
// vector, and defines its table. Included once by each set's .c file.
#define K_CAT(a, b) a##_##b
#define K_NAME(a, b) K_CAT(a, b)
#define K(name) K_NAME(name, SET)

#include "vector.h"
#include "layout.h"
#include "reduction.h"
#include "elementwise.h"
#include "conv.h"
#include "gemm.h"
#include "winograd.h"
#include "attention.h"

static float K(fma_loop)(long iterations) {
    vf a[12];
    for (int i = 0; i < 12; i++) a[i] = vsplat(1.0f + i * 1e-3f);
    vf m = vsplat(0.999999f), c = vsplat(1e-7f);
    for (long t = 0; t < iterations; t++)
        for (int i = 0; i < 12; i++) a[i] = a[i] * m + c;
    vf s = {0};
    for (int i = 0; i < 12; i++) s += a[i];
    return vsum(s);
}

#define K_STRING2(x) #x
#define K_STRING(x) K_STRING2(x)

const ddpm_kernel_set K(ddpm_kernels) = {
    .name = SET_NAME,
    .vector_floats = VL,
    .fma_loop = K(fma_loop),
    .conv_tile = CONV_TILE_VECTORS * VL,
    .conv_interleaved_tile = 2 * VL,
    .conv3x3_tile = K(conv3x3_tile),
    .conv3x3_interleaved_tile = K(conv3x3_interleaved_tile),
    .conv3x3_correlate = K(conv3x3_correlate),
    .channels_last_bordered = K(channels_last_bordered),
    .winograd_input = K(winograd_input),
    .winograd_output = K(winograd_output),
    .winograd4_input = K(winograd4_input),
    .winograd4_output = K(winograd4_output),
    .winograd_weights = K(winograd_weights),
    .winograd_weights_adjoint = K(winograd_weights_adjoint),
    .winograd_output_adjoint = K(winograd_output_adjoint),
    .winograd4_output_adjoint = K(winograd4_output_adjoint),
    .small_gemm = K(small_gemm),
    .pack_panels = K(pack_panels),
    .transpose = K(transpose),
    .im2col_plane = K(im2col_plane),
    .col2im_plane = K(col2im_plane),
    .border_plane = K(border_plane),
    .attention_score_rows = K(attention_score_rows),
    .attention_probability_rows = K(attention_probability_rows),
    .attention_weighted_rows = K(attention_weighted_rows),
    .attention_softmax_rows = K(attention_softmax_rows),
    .attention_outer_product_sum = K(attention_outer_product_sum),
    .softmax_row = K(softmax_row),
    .softmax_backward_row = K(softmax_backward_row),
    .silu_affine = K(silu_affine),
    .silu_affine_backward = K(silu_affine_backward),
    .norm_backward_dx = K(norm_backward_dx),
    .sum = K(sum),
    .dot = K(dot),
    .sum_squared_deviations = K(sum_squared_deviations),
    .add_column_sums = K(add_column_sums),
    .dropout = K(dropout),
    .adamw_step = K(adamw_step),
};
