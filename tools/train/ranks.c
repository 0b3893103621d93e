/* The ranks of a data-parallel run (MPI when built with it and started by
 * mpirun) and the log they share (ranks.h). */
#include "ranks.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef UT_WITH_MPI
#include <mpi.h>
#endif

int ut_rank = 0, ut_world = 1;
static FILE *g_logfile;

void ut_ranks_init(int *argc, char ***argv) {
#ifdef UT_WITH_MPI
  if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK")) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &ut_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ut_world);
  }
#else
  (void)argc;
  (void)argv;
#endif
}

void ut_log_to(const char *path, const char *mode) {
  if (ut_rank == 0) g_logfile = fopen(path, mode);
}

void ut_log(const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (ut_rank != 0) { /* other ranks report their errors only */
    if (!strncmp(line, "error", 5)) fprintf(stderr, "unimed-train [rank %d]: %s\n", ut_rank, line);
    return;
  }
  fprintf(stderr, "unimed-train: %s\n", line);
  if (g_logfile) {
    fprintf(g_logfile, "%s\n", line);
    fflush(g_logfile);
  }
}

void ut_log_cb(void *ctx, const char *line) {
  (void)ctx;
  ut_log("%s", line);
}

void ut_allreduce_sum(float *x, size_t n) {
#ifdef UT_WITH_MPI
  if (ut_world > 1) {
    const size_t chunk = (size_t)1 << 28; /* MPI counts are int */
    for (size_t off = 0; off < n; off += chunk) {
      size_t k = n - off < chunk ? n - off : chunk;
      MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
  }
#else
  (void)x;
  (void)n;
#endif
}

double ut_allreduce_sum_d(double v) {
#ifdef UT_WITH_MPI
  if (ut_world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
  return v;
}

int ut_allreduce_max_i(int v) {
#ifdef UT_WITH_MPI
  if (ut_world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
#endif
  return v;
}

void ut_barrier(void) {
#ifdef UT_WITH_MPI
  if (ut_world > 1) {
    MPI_Request rq;
    MPI_Ibarrier(MPI_COMM_WORLD, &rq);
    int done = 0;
    while (!done) {
      MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
      if (!done) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
      }
    }
  }
#endif
}

void ut_finish(int code) {
#ifdef UT_WITH_MPI
  if (ut_world > 1) {
    if (code != 0 && code != 2) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
  }
#endif
  if (g_logfile) fclose(g_logfile);
  exit(code);
}
