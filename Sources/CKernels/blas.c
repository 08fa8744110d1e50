// OpenBLAS through dlopen, so that OPENBLAS_CORETYPE can be set from the CPU's features before
// the library initialises: Debian's OpenBLAS 0.3.21 does not know newer CPUs (Emerald Rapids) and
// falls back to its oldest kernel (Prescott: sgemm 61 against 315 GFLOP/s with SkylakeX there).
// A value the user set is left alone. The library runs single-threaded: our own loops split every
// product across cores (left to its own threads, its idle workers spin and take the cores our
// kernels need).
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include "CKernels.h"

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
static sgemm_fn sgemm;
static char *(*corename)(void);
static const char *core_reason = "OpenBLAS's own detection";
static pthread_once_t once = PTHREAD_ONCE_INIT;

/// OpenBLAS's name for the best kernel of this CPU's features, or NULL to let it detect.
static const char *core_for_features(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

static void load(void) {
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (set && *set) {
        core_reason = "set by OPENBLAS_CORETYPE";
        // kept, but said: a machine image may set an older core than the CPU runs (Haswell on Zen 5
        // halves sgemm's speed there)
        static char reason[96];
        const char *best = core_for_features();
        if (best && strcasecmp(set, best) != 0) {
            snprintf(reason, sizeof reason, "set by OPENBLAS_CORETYPE; this CPU's features would choose %s", best);
            core_reason = reason;
        }
    } else if (core_for_features()) {
        setenv("OPENBLAS_CORETYPE", core_for_features(), 1);
        core_reason = "chosen from the CPU's features";
    }
    const char *names[] = {"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "libblas.so.3"};
    void *library = NULL;
    for (unsigned i = 0; i < sizeof names / sizeof *names && !library; i++) library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "error: cannot load OpenBLAS (libopenblas.so.0): %s\n  install it: apt-get install libopenblas0\n", dlerror());
        exit(1);
    }
    sgemm = (sgemm_fn)dlsym(library, "cblas_sgemm");
    corename = (char *(*)(void))dlsym(library, "openblas_get_corename");
    void (*threads)(int) = (void (*)(int))dlsym(library, "openblas_set_num_threads");
    if (!sgemm) {
        fprintf(stderr, "error: the BLAS library loaded has no cblas_sgemm\n");
        exit(1);
    }
    if (threads) threads(1);
}

enum { row_major = 101, no_trans = 111, trans = 112 };  // cblas.h's CBLAS_ORDER and CBLAS_TRANSPOSE

void ddpm_sgemm(int transpose_a, int transpose_b, long m, long n, long k, float alpha, const float *a, long lda,
                const float *b, long ldb, float beta, float *c, long ldc) {
    pthread_once(&once, load);
    sgemm(row_major, transpose_a ? trans : no_trans, transpose_b ? trans : no_trans, (int)m, (int)n, (int)k, alpha, a,
          (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

const char *ddpm_blas_core(void) {
    pthread_once(&once, load);
    return corename ? corename() : "unknown (not OpenBLAS)";
}

const char *ddpm_blas_core_reason(void) {
    pthread_once(&once, load);
    return core_reason;
}
