/* pool.c - the CPU backend's worker threads.
 *
 * Why not OpenMP: libgomp's idle threads spin (GOMP_SPINCOUNT, 300k rounds by
 * default) after every parallel region, and the only switches are environment
 * variables read once when libgomp loads, before a library like ours can set
 * them. In a GStreamer pipeline the decoders, encoders and sinks need those
 * cores: perf showed 70% of a tiny-model run in the spin loop. These workers
 * spin for at most KG_POOL_SPIN_NS after a job (long enough to catch the next
 * op of a forward pass, far too short to starve a neighbour) and then sleep on
 * a condition variable.
 *
 * oneDNN (Debian builds it on OpenMP) is called only from inside a job, one
 * call per work item, with the calling thread's OpenMP thread count at 1, so it
 * never opens a parallel region of its own (kg_cpu_omp_single). */
#include "cpu_kernels.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define KG_POOL_SPIN_NS 50000

struct kg_pool {
    int n_threads; /* including the caller */
    int n_started;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    /* the current job: written by the caller before gen is bumped */
    kg_pool_fn fn;
    void *ctx;
    int64_t n_items;
    atomic_llong next;
    atomic_int active;
    atomic_uint gen;
    atomic_int quit;
};

typedef struct worker_arg {
    kg_pool *pool;
    int tid;
} worker_arg;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void run_items(kg_pool *p, int tid)
{
    int64_t i;
    while ((i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) < p->n_items)
        p->fn(p->ctx, i, tid);
}

/* Spins up to KG_POOL_SPIN_NS for *word to leave `seen`; returns 1 if it did. */
static int spin_while_equal(atomic_uint *word, unsigned seen)
{
    int64_t t0 = now_ns();
    for (int k = 1;; k++) {
        if (atomic_load_explicit(word, memory_order_acquire) != seen)
            return 1;
        CPU_RELAX();
        if (k % 64 == 0 && now_ns() - t0 > KG_POOL_SPIN_NS)
            return 0;
    }
}

static void *worker_main(void *arg)
{
    kg_pool *p = ((worker_arg *)arg)->pool;
    int tid = ((worker_arg *)arg)->tid;
    unsigned seen = 0;
    free(arg);
    kg_cpu_omp_single();
    for (;;) {
        if (!spin_while_equal(&p->gen, seen)) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !p->quit)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (p->quit)
            return NULL;
        run_items(p, tid);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

kg_status kg_pool_new(kg_pool **out, int n_threads, kg_error *err)
{
    kg_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate the thread pool");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            kg_pool_free(p);
            return kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate the thread pool");
        }
    }
    for (int t = 1; t < n_threads; t++) {
        worker_arg *a = malloc(sizeof *a);
        int rc = ENOMEM;
        if (a) {
            a->pool = p;
            a->tid = t;
            rc = pthread_create(&p->threads[t - 1], NULL, worker_main, a);
        }
        if (rc != 0) {
            free(a);
            kg_pool_free(p);
            return kg_error_set(err, KG_ERR_NOMEM,
                                "cpu backend: cannot start worker thread %d of %d: %s", t,
                                n_threads, strerror(rc));
        }
        p->n_started++;
    }
    *out = p;
    return KG_OK;
}

void kg_pool_free(kg_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->n_started; t++)
        pthread_join(p->threads[t], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

int kg_pool_threads(const kg_pool *p)
{
    return p->n_threads;
}

void kg_pool_run(kg_pool *p, int64_t n_items, kg_pool_fn fn, void *ctx)
{
    int saved;
    if (n_items <= 0)
        return;
    saved = kg_cpu_omp_single();
    if (p->n_threads <= 1 || n_items == 1) {
        for (int64_t i = 0; i < n_items; i++)
            fn(ctx, i, 0);
        kg_cpu_omp_restore(saved);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->active, p->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_items(p, 0);
    {
        int64_t t0 = now_ns();
        for (int k = 1; atomic_load_explicit(&p->active, memory_order_acquire) > 0; k++) {
            CPU_RELAX();
            if (k % 64 == 0 && now_ns() - t0 > KG_POOL_SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                while (atomic_load_explicit(&p->active, memory_order_acquire) > 0)
                    pthread_cond_wait(&p->done, &p->mu);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
    }
    kg_cpu_omp_restore(saved);
}

int kg_cpu_omp_single(void)
{
#ifdef _OPENMP
    int n = omp_get_max_threads();
    if (n != 1)
        omp_set_num_threads(1);
    return n;
#else
    return 1;
#endif
}

void kg_cpu_omp_restore(int saved)
{
#ifdef _OPENMP
    if (saved != 1)
        omp_set_num_threads(saved);
#else
    (void)saved;
#endif
}

typedef struct range_job {
    kg_range_fn fn;
    void *ctx;
    int64_t n, chunk;
} range_job;

static void range_item(void *ctx, int64_t t, int tid)
{
    const range_job *r = ctx;
    int64_t i0 = t * r->chunk, i1 = r->n - i0 < r->chunk ? r->n : i0 + r->chunk;
    r->fn(r->ctx, i0, i1, tid);
}

void kg_cpu_parallel_range(const kg_cpu *cpu, int64_t n, int64_t chunk, int64_t par_min,
                           kg_range_fn fn, void *ctx)
{
    range_job r = {fn, ctx, n, chunk < 1 ? 1 : chunk};
    if (n <= 0)
        return;
    if (n <= par_min || cpu->n_threads <= 1)
        r.chunk = n;
    kg_pool_run(cpu->pool, (n + r.chunk - 1) / r.chunk, range_item, &r);
}

typedef struct all_items {
    kg_pool_fn fn;
    void *ctx;
    int64_t n;
} all_items;

static void run_all(void *ctx, int64_t t, int tid)
{
    const all_items *a = ctx;
    for (int64_t i = 0; i < a->n; i++)
        a->fn(a->ctx, i, tid);
}

void kg_cpu_parallel(const kg_cpu *cpu, int64_t n_items, double work, kg_pool_fn fn, void *ctx)
{
    if (work < KG_CPU_PAR_MIN_WORK && n_items > 1) {
        all_items a = {fn, ctx, n_items};
        kg_pool_run(cpu->pool, 1, run_all, &a);
        return;
    }
    kg_pool_run(cpu->pool, n_items, fn, ctx);
}
