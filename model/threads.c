/* Threads for model/: the OpenBLAS bracket of a forward pass and the one
 * worker pool every parallel loop of model/ runs on (ops.c's kernels and
 * the BF16 GEMM of gemm_bf16.c).
 *
 * Inside a forward pass (um_blas_begin .. um_blas_end) OpenBLAS runs
 * single-threaded and the pool runs with the thread count OpenBLAS had
 * (unimed_set_threads / OPENBLAS_NUM_THREADS), so only one set of threads
 * is ever busy. Pool workers sleep on a condition variable between parallel
 * regions. One region runs at a time: a concurrent caller (another engine's
 * thread) runs its tasks inline, so the process never has more busy threads
 * than the requested count plus one per extra concurrent caller. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"

/* ---- the OpenBLAS bracket ---- */

static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int blas_users; /* forwards in flight */
static atomic_int blas_saved; /* OpenBLAS threads before the first of them */

void um_blas_begin(void) {
  pthread_mutex_lock(&blas_mu);
  if (atomic_load(&blas_users) == 0) {
    int n = openblas_get_num_threads();
    atomic_store(&blas_saved, n < 1 ? 1 : n);
    if (n > 1) openblas_set_num_threads(1);
  }
  atomic_fetch_add(&blas_users, 1);
  pthread_mutex_unlock(&blas_mu);
}

void um_blas_end(void) {
  pthread_mutex_lock(&blas_mu);
  if (atomic_fetch_sub(&blas_users, 1) == 1 && atomic_load(&blas_saved) > 1)
    openblas_set_num_threads(atomic_load(&blas_saved));
  pthread_mutex_unlock(&blas_mu);
}

int um_blas_in_forward(void) { return atomic_load(&blas_users) > 0; }

int um_threads(void) {
  int n = um_blas_in_forward() ? atomic_load(&blas_saved) : openblas_get_num_threads();
  return n < 1 ? 1 : n > UM_MAX_THREADS ? UM_MAX_THREADS : n;
}

/* ---- the pool ---- */

static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  int started;     /* worker threads created (ids 1..started) */
  unsigned gen;    /* bumped for every parallel region */
  um_task_fn fn;
  void *ctx;
  int n_tasks;
  int helpers;     /* workers 1..helpers may join the open region */
  int open;        /* the caller still runs tasks: workers may join */
  int joined;      /* workers inside the region */
  atomic_int next; /* next task to hand out */
  unsigned start_gen[UM_MAX_THREADS];
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

/* Held by the caller whose region owns the pool. */
static pthread_mutex_t region = PTHREAD_MUTEX_INITIALIZER;

static void run_tasks(um_task_fn fn, void *ctx, int n_tasks, int thread) {
  for (int t; (t = atomic_fetch_add(&pool.next, 1)) < n_tasks;) fn(ctx, t, thread);
}

static void *worker_main(void *arg) {
  const int id = (int)(intptr_t)arg;
  pthread_mutex_lock(&pool.mu);
  unsigned seen = pool.start_gen[id];
  for (;;) {
    while (pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = pool.gen;
    /* Woken too late (the caller has finished alone) or not needed. */
    if (!pool.open || id > pool.helpers) continue;
    pool.joined++;
    um_task_fn fn = pool.fn;
    void *ctx = pool.ctx;
    const int n = pool.n_tasks;
    pthread_mutex_unlock(&pool.mu);
    run_tasks(fn, ctx, n, id);
    pthread_mutex_lock(&pool.mu);
    if (--pool.joined == 0) pthread_cond_signal(&pool.done);
  }
  return NULL;
}

void um_parallel_for(int n_tasks, int max_threads, um_task_fn fn, void *ctx) {
  int nt = um_threads();
  if (nt > max_threads) nt = max_threads;
  if (nt > n_tasks) nt = n_tasks;
  if (nt <= 1 || pthread_mutex_trylock(&region) != 0) {
    for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  while (pool.started < nt - 1) {
    pthread_t th;
    const int id = pool.started + 1;
    pool.start_gen[id] = pool.gen;
    if (pthread_create(&th, NULL, worker_main, (void *)(intptr_t)id) != 0) break;
    pthread_detach(th);
    pool.started = id;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n_tasks = n_tasks;
  pool.helpers = nt - 1 < pool.started ? nt - 1 : pool.started;
  pool.open = 1;
  atomic_store(&pool.next, 0);
  pool.gen++;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  run_tasks(fn, ctx, n_tasks, 0);
  /* Every task is handed out: wait only for workers that took some, not
   * for those the OS has not scheduled yet (on a busy machine that can take
   * a whole time slice). */
  pthread_mutex_lock(&pool.mu);
  pool.open = 0;
  while (pool.joined > 0) pthread_cond_wait(&pool.done, &pool.mu);
  pthread_mutex_unlock(&pool.mu);
  pthread_mutex_unlock(&region);
}
