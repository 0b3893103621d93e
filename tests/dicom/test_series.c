/*
 * UniMed for Orthanc — unit tests for dicom/series.c
 * (slice ordering, slice selection, aggregation).
 */
#include "series.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int g_fail = 0;
static int g_checks = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        g_checks++;                                                                    \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            g_fail++;                                                                  \
        }                                                                              \
    } while (0)

static int same_order(const size_t *got, const size_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "  order mismatch at %zu: got", i);
            for (size_t j = 0; j < n; j++) {
                fprintf(stderr, " %zu", got[j]);
            }
            fprintf(stderr, "\n  want");
            for (size_t j = 0; j < n; j++) {
                fprintf(stderr, " %zu", want[j]);
            }
            fprintf(stderr, "\n");
            return 0;
        }
    }
    return 1;
}

#define NS 12
/* input slot j holds anatomical slice PERM[j] */
static const size_t PERM[NS] = {7, 2, 11, 0, 5, 9, 3, 10, 1, 6, 8, 4};

/* Oblique CT: row = (cos a, sin a, 0), col = (-sin a cos b, cos a cos b, sin b)
 * with a = 20 deg, b = 35 deg; normal = row x col = (sin a sin b,
 * -cos a sin b, cos b).  Slice k sits at origin + 1.25 k * normal plus an
 * in-plane offset along col/row that changes with k, so that neither z nor
 * any single coordinate is monotonic in k. */
static void make_oblique(um_slice_info *s, size_t *want)
{
    const double pi = 3.14159265358979323846;
    const double a = 20.0 * pi / 180.0, b = 35.0 * pi / 180.0;
    const double r[3] = {cos(a), sin(a), 0.0};
    const double c[3] = {-sin(a) * cos(b), cos(a) * cos(b), sin(b)};
    const double nrm[3] = {sin(a) * sin(b), -cos(a) * sin(b), cos(b)};
    const double origin[3] = {-120.5, 33.25, -410.0};
    for (size_t j = 0; j < NS; j++) {
        const size_t k = PERM[j];
        const double off_c = 40.0 * (double)((int)((k * 7) % 5) - 2);
        const double off_r = 15.0 * (double)((int)((k * 3) % 4) - 1);
        memset(&s[j], 0, sizeof s[j]);
        s[j].has_position = 1;
        s[j].has_orientation = 1;
        for (int d = 0; d < 3; d++) {
            s[j].position[d] = origin[d] + 1.25 * (double)k * nrm[d] + off_c * c[d] + off_r * r[d];
            s[j].orientation[d] = r[d];
            s[j].orientation[3 + d] = c[d];
        }
        /* deliberately misleading instance numbers */
        s[j].has_instance_number = 1;
        s[j].instance_number = (long)((k * 5) % NS) + 1;
        want[k] = j;
    }
}

static void test_order_oblique(void)
{
    um_slice_info s[NS];
    size_t want[NS], got[NS];
    make_oblique(s, want);

    /* sanity of the fixture: sorting by z alone would be wrong */
    int z_monotone = 1;
    for (size_t k = 1; k < NS; k++) {
        z_monotone &= s[want[k]].position[2] > s[want[k - 1]].position[2];
    }
    CHECK(!z_monotone);

    CHECK(um_series_order(s, NS, got) == UM_ORDER_POSITION);
    CHECK(same_order(got, want, NS));

    /* reversing the row direction flips the normal: order reverses */
    um_slice_info flipped[NS];
    memcpy(flipped, s, sizeof flipped);
    for (size_t j = 0; j < NS; j++) {
        for (int d = 0; d < 3; d++) {
            flipped[j].orientation[d] = -flipped[j].orientation[d];
        }
    }
    size_t rev[NS];
    for (size_t k = 0; k < NS; k++) {
        rev[k] = want[NS - 1 - k];
    }
    CHECK(um_series_order(flipped, NS, got) == UM_ORDER_POSITION);
    CHECK(same_order(got, rev, NS));

    /* orientation jitter below tolerance (1e-5 rad-ish) keeps position order */
    um_slice_info jit[NS];
    memcpy(jit, s, sizeof jit);
    jit[4].orientation[0] += 1e-5;
    jit[9].orientation[5] -= 1e-5;
    CHECK(um_series_order(jit, NS, got) == UM_ORDER_POSITION);
    CHECK(same_order(got, want, NS));
}

static void test_order_axial_ties(void)
{
    /* axial: normal (0,0,1); positions descending in input; slices 1 and 2
     * share a location and are ordered by InstanceNumber (2 before 1 here);
     * slices 3 and 4 share a location without instance numbers: input order */
    um_slice_info s[5];
    memset(s, 0, sizeof s);
    const double z[5] = {10.0, 5.0, 5.0, -2.5, -2.5};
    const long inst[5] = {1, 9, 8, 0, 0};
    for (int i = 0; i < 5; i++) {
        s[i].has_position = 1;
        s[i].position[0] = 3.0 * i; /* in-plane shift must not matter */
        s[i].position[2] = z[i];
        s[i].has_orientation = 1;
        s[i].orientation[0] = 1.0;
        s[i].orientation[4] = 1.0;
        s[i].has_instance_number = i < 3;
        s[i].instance_number = inst[i];
    }
    size_t got[5];
    const size_t want[5] = {3, 4, 2, 1, 0};
    CHECK(um_series_order(s, 5, got) == UM_ORDER_POSITION);
    CHECK(same_order(got, want, 5));
}

static void test_order_fallbacks(void)
{
    um_slice_info s[NS], base[NS];
    size_t want_pos[NS], got[NS], want_inst[NS];
    make_oblique(base, want_pos);
    /* truthful instance numbers for the fallback cases */
    for (size_t j = 0; j < NS; j++) {
        base[j].instance_number = (long)PERM[j] + 1;
        want_inst[PERM[j]] = j;
    }

    /* one slice without a position */
    memcpy(s, base, sizeof s);
    s[5].has_position = 0;
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* one slice with a different orientation (e.g. a localizer) */
    memcpy(s, base, sizeof s);
    memset(s[2].orientation, 0, sizeof s[2].orientation);
    s[2].orientation[0] = 1.0;
    s[2].orientation[4] = 1.0;
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* degenerate orientation (row parallel to column) */
    memcpy(s, base, sizeof s);
    for (size_t j = 0; j < NS; j++) {
        memcpy(&s[j].orientation[3], &s[j].orientation[0], 3 * sizeof(double));
    }
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* orientation missing everywhere */
    memcpy(s, base, sizeof s);
    for (size_t j = 0; j < NS; j++) {
        s[j].has_orientation = 0;
    }
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* all slices at the same location (cine / multi-phase) */
    memcpy(s, base, sizeof s);
    for (size_t j = 0; j < NS; j++) {
        memcpy(s[j].position, s[0].position, sizeof s[j].position);
    }
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* non-finite coordinate */
    memcpy(s, base, sizeof s);
    s[7].position[1] = NAN;
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INSTANCE);
    CHECK(same_order(got, want_inst, NS));

    /* no usable position and no instance numbers: input order */
    memcpy(s, base, sizeof s);
    for (size_t j = 0; j < NS; j++) {
        s[j].has_position = 0;
        s[j].has_instance_number = 0;
    }
    size_t ident[NS];
    for (size_t j = 0; j < NS; j++) {
        ident[j] = j;
    }
    CHECK(um_series_order(s, NS, got) == UM_ORDER_INPUT);
    CHECK(same_order(got, ident, NS));

    /* instance ties are stable; missing numbers go last in input order */
    {
        um_slice_info t[7];
        memset(t, 0, sizeof t);
        const long inst[7] = {3, 1, 3, 2, 1, 0, 0};
        const int has[7] = {1, 1, 1, 1, 1, 0, 0};
        for (int i = 0; i < 7; i++) {
            t[i].instance_number = inst[i];
            t[i].has_instance_number = has[i];
        }
        /* 1,1 (idx 1,4) 2 (idx 3) 3,3 (idx 0,2), then unnumbered idx 5,6 */
        const size_t want[7] = {1, 4, 3, 0, 2, 5, 6};
        size_t g[7];
        CHECK(um_series_order(t, 7, g) == UM_ORDER_INSTANCE);
        CHECK(same_order(g, want, 7));
        /* negative instance numbers sort numerically */
        t[6].has_instance_number = 1;
        t[6].instance_number = -4;
        const size_t want2[7] = {6, 1, 4, 3, 0, 2, 5};
        CHECK(um_series_order(t, 7, g) == UM_ORDER_INSTANCE);
        CHECK(same_order(g, want2, 7));
    }

    /* edge cases */
    CHECK(um_series_order(NULL, 0, got) == UM_ORDER_INPUT);
    CHECK(um_series_order(NULL, 3, got) == -1);
    CHECK(um_series_order(base, 3, NULL) == -1);
    CHECK(um_series_order(base, 1, got) == UM_ORDER_POSITION && got[0] == 0);
}

static void check_select(size_t n, size_t kmax, const size_t *want, size_t wn)
{
    size_t got[64];
    size_t k = um_series_select(n, kmax, got);
    CHECK(k == wn);
    if (k == wn) {
        CHECK(same_order(got, want, wn));
    }
}

static void test_select(void)
{
    /* Hand-derived from floor((i + 0.5) * N / K), e.g. N=10, K=4:
     * 1.25, 3.75, 6.25, 8.75 -> 1, 3, 6, 8. */
    const size_t t10_4[] = {1, 3, 6, 8};
    const size_t t5_5[] = {0, 1, 2, 3, 4};
    const size_t t3_3[] = {0, 1, 2};      /* K = min(3, 8) */
    const size_t t100_3[] = {16, 50, 83}; /* 16.67, 50, 83.33 */
    const size_t t7_2[] = {1, 5};         /* 1.75, 5.25 */
    const size_t t1_1[] = {0};
    const size_t t9_4[] = {1, 3, 5, 7};   /* 1.125, 3.375, 5.625, 7.875 */
    const size_t t6_4[] = {0, 2, 3, 5};   /* 0.75, 2.25, 3.75, 5.25 */
    const size_t t64_16[] = {2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62};
    check_select(10, 4, t10_4, 4);
    check_select(5, 5, t5_5, 5);
    check_select(3, 8, t3_3, 3);
    check_select(100, 3, t100_3, 3);
    check_select(7, 2, t7_2, 2);
    check_select(1, 1, t1_1, 1);
    check_select(1, 32, t1_1, 1);
    check_select(9, 4, t9_4, 4);
    check_select(6, 4, t6_4, 4);
    check_select(64, 16, t64_16, 16);

    size_t buf[64];
    CHECK(um_series_select(0, 5, buf) == 0);
    CHECK(um_series_select(5, 0, buf) == 0);
    CHECK(um_series_select(5, 5, NULL) == 0);

    /* independent floating-point evaluation of the same formula, plus
     * structural properties, over a grid of N and K */
    int bad = 0;
    for (size_t n = 1; n <= 300; n++) {
        for (size_t kmax = 1; kmax <= 64; kmax++) {
            size_t k = um_series_select(n, kmax, buf);
            if (k != (n < kmax ? n : kmax)) {
                bad++;
                continue;
            }
            for (size_t i = 0; i < k; i++) {
                size_t ref = (size_t)floor(((double)i + 0.5) * (double)n / (double)k);
                if (buf[i] != ref || buf[i] >= n || (i > 0 && buf[i] <= buf[i - 1])) {
                    bad++;
                }
            }
        }
    }
    CHECK(bad == 0);
}

static int near(float a, float b, float tol)
{
    return fabsf(a - b) <= tol;
}

static void test_aggregate(void)
{
    /* rows: (3,4,0) -> (0.6,0.8,0); (0,0,2) -> (0,0,1); (0,0,0) skipped.
     * sum (0.6, 0.8, 1.0), norm sqrt(2): (0.42426407, 0.56568542, 0.70710678) */
    const float emb[9] = {3, 4, 0, 0, 0, 2, 0, 0, 0};
    float out[3];
    CHECK(um_embed_mean_normalized(emb, 3, 3, out) == 2);
    CHECK(near(out[0], 0.42426407f, 1e-6f));
    CHECK(near(out[1], 0.56568542f, 1e-6f));
    CHECK(near(out[2], 0.70710678f, 1e-6f));

    /* a single row is just normalised: (1,2,2)/3 */
    const float one[3] = {1, 2, 2};
    CHECK(um_embed_mean_normalized(one, 1, 3, out) == 1);
    CHECK(near(out[0], 1.0f / 3, 1e-7f) && near(out[1], 2.0f / 3, 1e-7f) &&
          near(out[2], 2.0f / 3, 1e-7f));

    /* scale invariance per row: (10,0) and (0,0.1) -> (1,0),(0,1) -> (s,s) */
    const float sc[4] = {10, 0, 0, 0.1f};
    float o2[2];
    CHECK(um_embed_mean_normalized(sc, 2, 2, o2) == 2);
    CHECK(near(o2[0], 0.70710678f, 1e-6f) && near(o2[1], 0.70710678f, 1e-6f));

    /* opposite rows cancel: error, zeroed output */
    const float opp[4] = {1, 0, -2, 0};
    o2[0] = o2[1] = 5.0f;
    CHECK(um_embed_mean_normalized(opp, 2, 2, o2) == -1);
    CHECK(o2[0] == 0.0f && o2[1] == 0.0f);
    CHECK(um_embed_mean_normalized(emb, 0, 3, out) == -1);
    CHECK(um_embed_mean_normalized(NULL, 1, 3, out) == -1);

    /* max probability per label: 3 slices x 3 labels */
    const float pr[9] = {0.1f, 0.9f, 0.3f, 0.7f, 0.2f, 0.3f, 0.4f, NAN, 0.05f};
    float pm[3];
    CHECK(um_probs_max(pr, 3, 3, pm) == 0);
    CHECK(pm[0] == 0.7f && pm[1] == 0.9f && pm[2] == 0.3f);
    const float nanonly[2] = {NAN, 0.5f};
    CHECK(um_probs_max(nanonly, 1, 2, pm) == 0 && isnan(pm[0]) && pm[1] == 0.5f);
    CHECK(um_probs_max(pr, 0, 3, pm) == -1);
    CHECK(um_probs_max(pr, 3, 0, pm) == -1);
}

int main(void)
{
    test_order_oblique();
    test_order_axial_ties();
    test_order_fallbacks();
    test_select();
    test_aggregate();
    printf("test_series: %d checks, %d failures: %s\n", g_checks, g_fail, g_fail ? "FAIL" : "PASS");
    return g_fail ? 1 : 0;
}
