// Which kernel set runs: the best the CPU supports, or a lower one named by DDPM_KERNELS
// (PyTorch's ATEN_CPU_CAPABILITY convention: a variable can lower the choice, never raise it).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CKernels.h"

extern const ddpm_kernel_set ddpm_kernels_portable;
#if defined(__x86_64__)
extern const ddpm_kernel_set ddpm_kernels_avx2;
extern const ddpm_kernel_set ddpm_kernels_avx512;
#endif

static const ddpm_kernel_set *available[3];
static int available_count;
static const ddpm_kernel_set *active;
static char reason[160];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
#ifdef DDPM_EMULATED_AVX512
    const int avx512 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");  // scripts/test-avx512-emulated
#else
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                       && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
                       && __builtin_cpu_supports("fma");
#endif
    if (avx512) available[available_count++] = &ddpm_kernels_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        available[available_count++] = &ddpm_kernels_avx2;
#endif
    available[available_count++] = &ddpm_kernels_portable;
    active = available[0];
#ifdef DDPM_EMULATED_AVX512
    snprintf(reason, sizeof reason, "the best set this CPU supports, avx512 emulated on AVX2 (a test build)");
#else
    snprintf(reason, sizeof reason, "the best set this CPU supports");
#endif
    const char *wanted = getenv("DDPM_KERNELS");
    if (wanted && *wanted) {
        for (int i = 0; i < available_count; i++) {
            const char *name = available[i]->name;
            if (strcmp(wanted, name) == 0 || strncmp(wanted, name, strlen(wanted)) == 0) {
                active = available[i];
                snprintf(reason, sizeof reason, "DDPM_KERNELS=%s", wanted);
                return;
            }
        }
        snprintf(reason, sizeof reason, "DDPM_KERNELS=%s is not a set this CPU runs (%s ...): the best instead", wanted,
                 available[0]->name);
        fprintf(stderr, "warning: %s\n", reason);
    }
}

const ddpm_kernel_set *ddpm_kernels(void) {
    pthread_once(&once, choose);
    return active;
}

const ddpm_kernel_set *const *ddpm_kernel_sets_available(int *count) {
    pthread_once(&once, choose);
    *count = available_count;
    return available;
}

const char *ddpm_kernels_reason(void) {
    pthread_once(&once, choose);
    return reason;
}
