/*
 * UniMed for Orthanc — series-level logic (no DICOM parsing):
 * slice ordering, slice selection, aggregation of per-slice model outputs.
 * Pure C11, libc + libm.
 */
#ifndef UNIMED_DICOM_SERIES_H
#define UNIMED_DICOM_SERIES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What is known about one slice (instance or frame). Flags are 0/1. */
typedef struct {
    int has_position;        /* ImagePositionPatient (0020,0032) present */
    double position[3];      /* mm, patient coordinates */
    int has_orientation;     /* ImageOrientationPatient (0020,0037) present */
    double orientation[6];   /* row direction cosines, then column cosines */
    int has_instance_number; /* InstanceNumber (0020,0013) present */
    long instance_number;
} um_slice_info;

/* How um_series_order() ordered the slices. */
typedef enum {
    UM_ORDER_INPUT = 0,    /* nothing usable: input order kept */
    UM_ORDER_POSITION = 1, /* by position along the slice normal */
    UM_ORDER_INSTANCE = 2  /* by InstanceNumber */
} um_order_method;

/* Tolerances used by um_series_order(). */
#define UM_SERIES_NORMAL_MIN_DOT 0.9999 /* slice normals within ~0.8 degrees */
#define UM_SERIES_MIN_EXTENT_MM 1e-4    /* positions must spread along the normal */

/*
 * Writes a permutation of 0..n-1 to order[] (order[k] = input index of the
 * k-th slice) and returns the um_order_method used, or -1 on bad arguments /
 * out of memory.
 *
 * Position ordering is used when every slice has a position and an
 * orientation, every orientation gives a valid normal n = row x col (|n| >
 * 0.5) parallel to the first slice's (dot >= UM_SERIES_NORMAL_MIN_DOT), all
 * values are finite, and the projections d = n . position are not all equal
 * (extent > UM_SERIES_MIN_EXTENT_MM).  Slices are sorted by ascending d
 * (for axial slices, ascending z: feet to head); equal d are ordered by
 * InstanceNumber when both have one, then by input index.
 *
 * Otherwise, if at least one slice has an InstanceNumber, slices are sorted by
 * ascending InstanceNumber, those without one after all others; ties keep
 * input order.  Otherwise the input order is returned.
 *
 * The sort is stable: input index is the final tie-break.
 */
int um_series_order(const um_slice_info *slices, size_t n, size_t *order);

/*
 * Evenly spread selection of K = min(n, max_slices) positions out of n:
 * idx[i] = floor((i + 0.5) * n / K) for i in 0..K-1 (computed exactly in
 * integers).  idx must hold K entries.  Returns K (0 when n or max_slices is
 * 0, or idx is NULL).
 */
size_t um_series_select(size_t n, size_t max_slices, size_t *idx);

/*
 * Series embedding: mean of the L2-normalised rows of emb (n x dim, row-major)
 * then L2-normalised again, into out (dim).  Rows with zero norm or
 * non-finite values are skipped.  Accumulates in double.
 * Returns the number of rows used, or -1 on bad arguments or when no row /
 * a zero mean vector remains (out is then zeroed).
 */
int um_embed_mean_normalized(const float *emb, size_t n, size_t dim, float *out);

/*
 * Per-label maximum probability across slices: out[j] = max_i probs[i*nl + j].
 * NaN entries are ignored (a label with only NaN gives NaN).
 * Returns 0, or -1 on bad arguments (n == 0, nl == 0, NULL).
 */
int um_probs_max(const float *probs, size_t n, size_t nl, float *out);

#ifdef __cplusplus
}
#endif

#endif /* UNIMED_DICOM_SERIES_H */
