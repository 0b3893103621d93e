/*
 * UniMed for Orthanc — series-level logic. See series.h.
 */
#include "series.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double key;     /* distance along the normal (position mode) */
    long inst;      /* InstanceNumber */
    int has_inst;
    size_t idx;     /* input index: final tie-break => stable */
} sort_item;

static int cmp_position(const void *pa, const void *pb)
{
    const sort_item *a = pa, *b = pb;
    if (a->key < b->key) {
        return -1;
    }
    if (a->key > b->key) {
        return 1;
    }
    if (a->has_inst && b->has_inst && a->inst != b->inst) {
        return a->inst < b->inst ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int cmp_instance(const void *pa, const void *pb)
{
    const sort_item *a = pa, *b = pb;
    if (a->has_inst != b->has_inst) {
        return a->has_inst ? -1 : 1; /* numbered slices first */
    }
    if (a->has_inst && a->inst != b->inst) {
        return a->inst < b->inst ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int all_finite(const double *v, int n)
{
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            return 0;
        }
    }
    return 1;
}

/* Unit slice normal from an orientation; returns 0 if degenerate. */
static int slice_normal(const double o[6], double nrm[3])
{
    if (!all_finite(o, 6)) {
        return 0;
    }
    nrm[0] = o[1] * o[5] - o[2] * o[4];
    nrm[1] = o[2] * o[3] - o[0] * o[5];
    nrm[2] = o[0] * o[4] - o[1] * o[3];
    const double len = sqrt(nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]);
    if (!(len > 0.5) || !isfinite(len)) {
        return 0;
    }
    nrm[0] /= len;
    nrm[1] /= len;
    nrm[2] /= len;
    return 1;
}

/* Fills items[].key with distances; returns 1 if position ordering is usable. */
static int position_keys(const um_slice_info *s, size_t n, sort_item *items)
{
    double ref[3];
    if (!s[0].has_orientation || !slice_normal(s[0].orientation, ref)) {
        return 0;
    }
    double lo = 0.0, hi = 0.0;
    for (size_t i = 0; i < n; i++) {
        double nrm[3];
        if (!s[i].has_position || !s[i].has_orientation || !all_finite(s[i].position, 3) ||
            !slice_normal(s[i].orientation, nrm)) {
            return 0;
        }
        if (nrm[0] * ref[0] + nrm[1] * ref[1] + nrm[2] * ref[2] < UM_SERIES_NORMAL_MIN_DOT) {
            return 0;
        }
        /* project on the common (first slice's) normal */
        const double d =
            ref[0] * s[i].position[0] + ref[1] * s[i].position[1] + ref[2] * s[i].position[2];
        items[i].key = d;
        if (i == 0 || d < lo) {
            lo = d;
        }
        if (i == 0 || d > hi) {
            hi = d;
        }
    }
    if (n > 1 && !(hi - lo > UM_SERIES_MIN_EXTENT_MM)) {
        return 0; /* all slices at one location (e.g. cine): no spatial order */
    }
    return 1;
}

int um_series_order(const um_slice_info *slices, size_t n, size_t *order)
{
    if (!order || (n > 0 && !slices)) {
        return -1;
    }
    if (n == 0) {
        return UM_ORDER_INPUT;
    }
    if (n > SIZE_MAX / sizeof(sort_item)) {
        return -1;
    }
    sort_item *items = malloc(n * sizeof *items);
    if (!items) {
        return -1;
    }
    size_t n_inst = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].key = 0.0;
        items[i].inst = slices[i].instance_number;
        items[i].has_inst = slices[i].has_instance_number ? 1 : 0;
        items[i].idx = i;
        n_inst += (size_t)items[i].has_inst;
    }
    int method;
    if (position_keys(slices, n, items)) {
        qsort(items, n, sizeof *items, cmp_position);
        method = UM_ORDER_POSITION;
    } else if (n_inst > 0) {
        qsort(items, n, sizeof *items, cmp_instance);
        method = UM_ORDER_INSTANCE;
    } else {
        method = UM_ORDER_INPUT;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = items[i].idx;
    }
    free(items);
    return method;
}

size_t um_series_select(size_t n, size_t max_slices, size_t *idx)
{
    if (!idx || n == 0 || max_slices == 0) {
        return 0;
    }
    const size_t k = n < max_slices ? n : max_slices;
    for (size_t i = 0; i < k; i++) {
        /* floor((i + 0.5) * n / k) == floor((2i + 1) * n / (2k)), exact in
         * integers; long double only for sizes where that would overflow. */
        const size_t a = 2 * i + 1;
        if (k <= SIZE_MAX / 2 && n <= SIZE_MAX / a) {
            idx[i] = (a * n) / (2 * k);
        } else {
            idx[i] = (size_t)floorl(((long double)i + 0.5L) * (long double)n / (long double)k);
        }
    }
    return k;
}

int um_embed_mean_normalized(const float *emb, size_t n, size_t dim, float *out)
{
    if (!emb || !out || n == 0 || dim == 0) {
        return -1;
    }
    double *acc = calloc(dim, sizeof *acc);
    if (!acc) {
        return -1;
    }
    int used = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = emb + i * dim;
        double ss = 0.0;
        for (size_t j = 0; j < dim; j++) {
            ss += (double)row[j] * (double)row[j];
        }
        if (!(ss > 0.0) || !isfinite(ss)) {
            continue;
        }
        const double inv = 1.0 / sqrt(ss);
        for (size_t j = 0; j < dim; j++) {
            acc[j] += (double)row[j] * inv;
        }
        used++;
    }
    double ss = 0.0;
    for (size_t j = 0; j < dim; j++) {
        ss += acc[j] * acc[j];
    }
    if (used == 0 || !(ss > 0.0)) {
        memset(out, 0, dim * sizeof *out);
        free(acc);
        return -1;
    }
    /* dividing the mean by its norm == dividing the sum by its norm */
    const double inv = 1.0 / sqrt(ss);
    for (size_t j = 0; j < dim; j++) {
        out[j] = (float)(acc[j] * inv);
    }
    free(acc);
    return used;
}

int um_probs_max(const float *probs, size_t n, size_t nl, float *out)
{
    if (!probs || !out || n == 0 || nl == 0) {
        return -1;
    }
    for (size_t j = 0; j < nl; j++) {
        float m = NAN;
        for (size_t i = 0; i < n; i++) {
            const float v = probs[i * nl + j];
            if (isnan(v)) {
                continue;
            }
            if (isnan(m) || v > m) {
                m = v;
            }
        }
        out[j] = m;
    }
    return 0;
}
