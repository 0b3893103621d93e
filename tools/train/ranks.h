/* The processes of a data-parallel unimed-train run (MPI ranks; one process
 * without MPI) and the log they share: rank 0 reports progress and writes
 * OUT/train.log, the other ranks report their errors only. */
#ifndef UNIMED_TRAIN_RANKS_H
#define UNIMED_TRAIN_RANKS_H

#include <stddef.h>

extern int ut_rank, ut_world;

/* MPI_Init when started by mpirun (a plain start stays one process). */
void ut_ranks_init(int *argc, char ***argv);
/* Also writes every line rank 0 logs to this file (NULL: none). */
void ut_log_to(const char *path, const char *mode);
/* One line of the run's log, "unimed-train: " in front on stderr. */
void ut_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* ut_log as a callback (ctx unused). */
void ut_log_cb(void *ctx, const char *line);

/* Sums over the ranks in place (nothing with one rank). */
void ut_allreduce_sum(float *x, size_t n);
double ut_allreduce_sum_d(double v);
int ut_allreduce_max_i(int v);
/* Waits for rank 0 (checkpoint, validation) without spinning a core. */
void ut_barrier(void);
/* Ends the run with exit status code (a failure on one rank stops all). */
_Noreturn void ut_finish(int code);

#endif
