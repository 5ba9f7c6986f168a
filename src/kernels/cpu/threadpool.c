/* The kernels' thread pool (see threadpool.h) and mt_parallel_for.
 *
 * Dispatch protocol: the caller publishes a job (fn, ctx, n, chunk), resets `next`, opens the
 * job (`closed` = 0) and bumps `gen`. A worker that sees a new generation registers in
 * `active`, and if the job is still open takes chunks of indices from the atomic `next`
 * counter until it passes n; then it deregisters. The caller takes chunks too; when they run
 * out it closes the job and waits until `active` is zero. Registration and closing use
 * sequentially consistent order, so either the caller waits for a worker or the worker sees
 * the job closed and leaves the fields alone: a job's fields are never rewritten while a
 * worker may read them, and the caller never waits for workers still waking up (a small loop
 * issued while they sleep is simply run by the caller). A worker that has spun for SPIN_NS
 * without a new generation registers in `sleepers` and futex-waits on `gen`; the caller
 * wakes them only when someone sleeps (same ordering argument, so a bump is never missed).
 * The caller's own wait for `active` to reach zero spins for WAIT_SPIN_NS, then sleeps on
 * `done`, which the last worker out bumps and wakes (see wait_workers). */
#include "kernels/cpu/threadpool.h"

#include <limits.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "util/err.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* A worker spins this long for the next loop before it sleeps. Short: when the machine's CPUs
 * are shared (a VM whose vCPUs take turns on one core), a spinning worker holds the CPU the
 * caller needs to issue the next loop; 50 us still covers the gaps between the loops of a
 * forward pass. (0.3 ms before: decode with both threads on one CPU ran 35% slower than one
 * thread alone; see docs/PERF_NOTES.md.) */
#ifndef SPIN_NS
#define SPIN_NS 50000
#endif
#ifndef WAIT_SPIN_NS
#define WAIT_SPIN_NS 200000 /* the caller's spin before it sleeps until the workers are done */
#endif

typedef struct pool {
    int nthreads; /* participants, caller included */
    pthread_t *workers;
    _Atomic uint32_t gen;
    _Atomic int sleepers;
    _Atomic int active; /* workers registered for the current job */
    _Atomic int closed; /* 1 once the caller has found no chunks left */
    _Atomic int next;
    _Atomic int stop;
    _Atomic uint32_t done;        /* bumped by the last worker out while the caller sleeps */
    _Atomic int caller_sleeping;
    /* the current job, written by the caller before bumping gen */
    void (*fn)(void *ctx, int i);
    void *ctx;
    int n;
    int chunk;
} pool;

static pool g_pool;
static int g_running;
static pthread_mutex_t g_dispatch = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int tl_in_loop;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)addr;
    (void)expected;
    sched_yield();
#endif
}

static void futex_wake_all(_Atomic uint32_t *addr) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

static void run_chunks(pool *p) {
    const int n = p->n, chunk = p->chunk;
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, chunk, memory_order_relaxed);
        if (i >= n) break;
        int end = i + chunk < n ? i + chunk : n;
        for (; i < end; i++) p->fn(p->ctx, i);
    }
}

/* Waits until gen differs from seen; returns the new value. */
static uint32_t wait_generation(pool *p, uint32_t seen) {
    int64_t start = 0;
    for (unsigned spins = 0;; spins++) {
        uint32_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        if ((spins & 255) == 0) {
            int64_t t = now_ns();
            if (spins == 0) start = t;
            else if (t - start > SPIN_NS) {
                atomic_fetch_add(&p->sleepers, 1);
                if (atomic_load(&p->gen) == seen) futex_wait(&p->gen, seen);
                atomic_fetch_sub(&p->sleepers, 1);
                spins = UINT32_MAX; /* wraps to 0: restart the spin phase */
                continue;
            }
        }
        CPU_RELAX();
    }
}

/* The caller's wait for the workers still running chunks of its loop: a short spin, then a
 * sleep (a worker that has been descheduled, e.g. its CPU is shared, gets the CPU back at once
 * instead of after the spinner's time slice). The last worker out wakes a sleeping caller;
 * sequentially consistent order on caller_sleeping / active, so a wake-up is never missed. */
static void wait_workers(pool *p) {
    int64_t start = 0;
    for (unsigned spins = 0; atomic_load(&p->active) > 0; spins++) {
        if ((spins & 63) == 0) {
            int64_t t = now_ns();
            if (spins == 0) start = t;
            else if (t - start > WAIT_SPIN_NS) break;
        }
        CPU_RELAX();
    }
    if (atomic_load(&p->active) == 0) return;
    atomic_store(&p->caller_sleeping, 1);
    for (;;) {
        uint32_t d = atomic_load(&p->done);
        if (atomic_load(&p->active) == 0) break;
        futex_wait(&p->done, d);
    }
    atomic_store(&p->caller_sleeping, 0);
}

static void *worker_main(void *arg) {
    pool *p = arg;
    tl_in_loop = 1; /* loops issued by a loop body run serially */
    uint32_t seen = 0;
    for (;;) {
        seen = wait_generation(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        atomic_fetch_add(&p->active, 1);
        if (!atomic_load(&p->closed)) run_chunks(p);
        if (atomic_fetch_sub(&p->active, 1) == 1 && atomic_load(&p->caller_sleeping)) {
            atomic_fetch_add(&p->done, 1);
            futex_wake_all(&p->done);
        }
    }
    return NULL;
}

void mt_pool_stop(void) {
    pthread_mutex_lock(&g_dispatch);
    if (g_running) {
        pool *p = &g_pool;
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1);
        futex_wake_all(&p->gen);
        for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->workers[i], NULL);
        free(p->workers);
        p->workers = NULL;
        g_running = 0;
    }
    pthread_mutex_unlock(&g_dispatch);
}

void mt_pool_start(int n) {
    mt_pool_stop();
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    if (n > 1024) n = 1024;
    pthread_mutex_lock(&g_dispatch);
    pool *p = &g_pool;
    p->nthreads = 1;
    atomic_store(&p->gen, 0);
    atomic_store(&p->sleepers, 0);
    atomic_store(&p->active, 0);
    atomic_store(&p->closed, 1);
    atomic_store(&p->next, 0);
    atomic_store(&p->stop, 0);
    atomic_store(&p->done, 0);
    atomic_store(&p->caller_sleeping, 0);
    p->workers = n > 1 ? calloc((size_t)(n - 1), sizeof *p->workers) : NULL;
    if (n > 1 && !p->workers) n = 1;
    for (int i = 0; i < n - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
            mt_log("kernels: could only start %d of %d worker threads", i, n - 1);
            break;
        }
        p->nthreads++;
    }
    g_running = 1;
    pthread_mutex_unlock(&g_dispatch);
}

int mt_pool_threads(void) { return g_running ? g_pool.nthreads : 1; }

int mt_pool_in_loop(void) { return tl_in_loop; }

void mt_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx) {
    if (n <= 0) return;
    if (n == 1 || tl_in_loop) {
        for (int i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&g_dispatch);
    pool *p = &g_pool;
    if (!g_running || p->nthreads <= 1) {
        pthread_mutex_unlock(&g_dispatch);
        for (int i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    /* a few chunks per participant: balance without much counter traffic */
    int chunk = n / (p->nthreads * 4);
    p->chunk = chunk > 0 ? chunk : 1;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store(&p->closed, 0);  /* seq_cst: publishes the fields above */
    atomic_fetch_add(&p->gen, 1); /* seq_cst */
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(&p->gen);

    tl_in_loop = 1;
    run_chunks(p);
    tl_in_loop = 0;

    atomic_store(&p->closed, 1);
    wait_workers(p);
    pthread_mutex_unlock(&g_dispatch);
}
