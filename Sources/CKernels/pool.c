// The kernels' workers: threads - 1 threads started at first use that, after each job, spin for a
// while (SPIN_NS) watching for the next one before they sleep, as OpenMP's runtimes do. A forward
// pass runs a few hundred parallel loops of a fraction of a millisecond each; woken from sleep for
// every one (as libdispatch's workers are), a worker starts tens of microseconds late and the
// caller waits for it (sampling at batch 16 ran 1.74 of 2 cores busy).
//
// A job is published in one word, state = generation << 32 | count << 16 | next: a thread claims
// index `next` by compare-and-swap while the generation is the one it saw and next < count, so a
// thread that arrives after its job has ended claims nothing, and one that read the next job's
// function before that job's generation was published cannot claim under it either. The caller
// claims indices too and then waits until all are finished; if the workers are late it runs them
// all itself. One job at a time: a call while another runs (a nested loop, or another thread's)
// returns 0 and the caller runs the loop some other way.
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "CKernels.h"

enum { SPIN_NS = 200000, MAX_COUNT = 0xffff };

static struct {
    _Atomic unsigned long state;
    _Atomic long finished;
    _Atomic int busy, sleeping;
    _Atomic(ddpm_job) job;
    _Atomic(void *) context;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static inline void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static inline unsigned long generation(unsigned long state) { return state >> 32; }

/// Claims the next index of job `gen`; 0 when that job has none left or has ended.
static int claim(unsigned long gen, long *index) {
    unsigned long s = atomic_load(&pool.state);
    while (generation(s) == gen && (s & MAX_COUNT) < ((s >> 16) & MAX_COUNT)) {
        if (atomic_compare_exchange_weak(&pool.state, &s, s + 1)) {
            *index = (long)(s & MAX_COUNT);
            return 1;
        }
    }
    return 0;
}

static void work(unsigned long gen) {
    ddpm_job job = atomic_load(&pool.job);
    void *context = atomic_load(&pool.context);
    long index;
    while (claim(gen, &index)) {
        job(context, index);
        atomic_fetch_add(&pool.finished, 1);
    }
}

static long nanoseconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *worker(void *unused) {
    (void)unused;
    unsigned long seen = generation(atomic_load(&pool.state));
    for (;;) {
        long since = nanoseconds();
        for (long spins = 1; generation(atomic_load(&pool.state)) == seen; spins++) {
            pause_briefly();
            if (spins % 256 == 0 && nanoseconds() - since > SPIN_NS) {
                // sleeping is counted before the state is read again, and the caller reads sleeping
                // after it publishes: one of the two sees the other (both sequentially consistent)
                pthread_mutex_lock(&pool.lock);
                atomic_fetch_add(&pool.sleeping, 1);
                while (generation(atomic_load(&pool.state)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
                atomic_fetch_sub(&pool.sleeping, 1);
                pthread_mutex_unlock(&pool.lock);
            }
        }
        seen = generation(atomic_load(&pool.state));
        work(seen);
    }
    return NULL;
}

static pthread_once_t started = PTHREAD_ONCE_INIT;
static _Atomic int pool_threads;  // the first call's count

static void start(void) {
    for (int i = 1; i < pool_threads; i++) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_create(&thread, &attributes, worker, NULL);
        pthread_attr_destroy(&attributes);
    }
}

int ddpm_parallel_run(int threads, long count, ddpm_job job, void *context) {
    if (threads < 2 || count < 1 || count > MAX_COUNT) return 0;
    int unset = 0;
    atomic_compare_exchange_strong(&pool_threads, &unset, threads);
    pthread_once(&started, start);
    int idle = 0;
    if (!atomic_compare_exchange_strong(&pool.busy, &idle, 1)) return 0;
    atomic_store(&pool.job, job);
    atomic_store(&pool.context, context);
    atomic_store(&pool.finished, 0);
    unsigned long gen = (generation(atomic_load(&pool.state)) + 1) & 0xffffffffUL;
    atomic_store(&pool.state, gen << 32 | (unsigned long)count << 16);
    if (atomic_load(&pool.sleeping) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    work(gen);
    while (atomic_load(&pool.finished) < count) pause_briefly();
    atomic_store(&pool.busy, 0);
    return 1;
}

long ddpm_claim(long *counter) { return atomic_fetch_add_explicit((_Atomic long *)counter, 1, memory_order_relaxed); }
