/* test_sampler.c: greedy, temperature, top-k, top-p and the seeded RNG. */
#include "check.h"
#include "prosparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ps_sampler *make(float temp, int32_t k, float p, uint64_t seed) {
    ps_sampler_params sp = {temp, k, p, seed};
    return ps_sampler_new(&sp);
}

/* Frequencies of n draws over 3 tokens. */
static void draw3(ps_sampler *s, const float *logits, int n, double *freq) {
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        int32_t t = ps_sampler_sample(s, logits, 3);
        if (t >= 0 && t < 3) cnt[t]++;
    }
    for (int i = 0; i < 3; i++) freq[i] = (double)cnt[i] / n;
}

TEST(greedy_is_argmax) {
    float x[6] = {0.1f, 2.0f, -1.0f, 2.0f, NAN, 1.9f};
    ps_sampler *s = make(0.0f, 0, 1.0f, 1);
    CHECK(ps_sampler_sample(s, x, 6) == 1); /* first of the tied maxima; NaN ignored */
    ps_sampler_free(s);
    /* top_k = 1 at temperature 1 is greedy too, whatever the seed */
    for (uint64_t seed = 0; seed < 20; seed++) {
        s = make(1.0f, 1, 1.0f, seed);
        CHECK(ps_sampler_sample(s, x, 6) == 1);
        ps_sampler_free(s);
    }
    /* random logits: greedy matches a plain argmax */
    float y[1000];
    uint32_t st = 7;
    for (int trial = 0; trial < 20; trial++) {
        int best = 0;
        for (int i = 0; i < 1000; i++) {
            st = st * 1664525u + 1013904223u;
            y[i] = (float)(st >> 8) / (float)(1u << 24) * 10.0f - 5.0f;
            if (y[i] > y[best]) best = i;
        }
        s = make(-1.0f, 40, 0.9f, (uint64_t)trial);
        CHECK(ps_sampler_sample(s, y, 1000) == best);
        ps_sampler_free(s);
    }
}

TEST(bad_arguments) {
    float x[3] = {-INFINITY, -INFINITY, NAN};
    ps_sampler *s = make(1.0f, 0, 1.0f, 1);
    CHECK(ps_sampler_sample(s, x, 3) < 0);        /* nothing finite */
    CHECK(ps_last_error()[0] != '\0');
    CHECK(ps_sampler_sample(s, NULL, 3) < 0);
    CHECK(ps_sampler_sample(s, x, 0) < 0);
    CHECK(ps_sampler_sample(NULL, x, 3) < 0);
    ps_sampler_free(s);
    CHECK(make(NAN, 0, 1.0f, 1) == NULL);
    ps_sampler_free(NULL);
    /* -inf logits are never drawn */
    float y[4] = {-INFINITY, 0.0f, -INFINITY, 0.0f};
    s = make(1.0f, 0, 1.0f, 3);
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        int32_t t = ps_sampler_sample(s, y, 4);
        bad += t != 1 && t != 3;
    }
    CHECK(bad == 0);
    ps_sampler_free(s);
}

TEST(distribution_matches_softmax) {
    float x[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    double f[3];
    ps_sampler *s = make(1.0f, 0, 1.0f, 12345);
    draw3(s, x, 40000, f);
    CHECK_NEAR(f[0], 0.5, 0.015);
    CHECK_NEAR(f[1], 0.3, 0.015);
    CHECK_NEAR(f[2], 0.2, 0.015);
    ps_sampler_free(s);
    /* temperature 2: p ~ sqrt(p) */
    double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
    s = make(2.0f, 0, 1.0f, 99);
    draw3(s, x, 40000, f);
    CHECK_NEAR(f[0], sqrt(0.5) / z, 0.015);
    CHECK_NEAR(f[1], sqrt(0.3) / z, 0.015);
    CHECK_NEAR(f[2], sqrt(0.2) / z, 0.015);
    ps_sampler_free(s);
}

TEST(top_k_and_top_p_cut) {
    float x[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    double f[3];
    ps_sampler *s = make(1.0f, 2, 1.0f, 5); /* top_k 2: renormalised 5/8, 3/8 */
    draw3(s, x, 40000, f);
    CHECK(f[2] == 0.0);
    CHECK_NEAR(f[0], 0.625, 0.015);
    ps_sampler_free(s);
    s = make(1.0f, 0, 0.6f, 6); /* 0.5 < 0.6 <= 0.8: two tokens kept */
    draw3(s, x, 40000, f);
    CHECK(f[2] == 0.0);
    CHECK_NEAR(f[1], 0.375, 0.015);
    ps_sampler_free(s);
    s = make(1.0f, 0, 0.4f, 7); /* the top token alone reaches 0.4 */
    draw3(s, x, 2000, f);
    CHECK(f[0] == 1.0);
    ps_sampler_free(s);
}

TEST(top_p_on_a_large_flat_vocab) {
    /* 50,000 equal logits, top_p 0.5: the kept set is the 25,000 lowest ids,
     * far past the first sorted window, so the window must widen */
    enum { N = 50000 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = 1.0f;
    ps_sampler *s = make(1.0f, 0, 0.5f, 11);
    int out = 0, high = 0;
    for (int i = 0; i < 100; i++) {
        int32_t t = ps_sampler_sample(s, x, N);
        out += t < 0 || t >= 25000;
        high += t >= 1000;
    }
    CHECK(out == 0);
    CHECK(high > 80);
    ps_sampler_free(s);
    free(x);
}

static const float *sort_keys;
static int by_logit_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (sort_keys[x] != sort_keys[y]) return sort_keys[x] > sort_keys[y] ? -1 : 1;
    return (x > y) - (x < y);
}

TEST(top_p_matches_a_full_sort) {
    /* random logits, from nearly flat to peaked, with ties: every draw must
     * lie in the top_p prefix a full sort gives, and much of that set is hit */
    enum { N = 8000 };
    float *x = malloc(N * sizeof *x);
    int32_t *order = malloc(N * sizeof *order);
    char *in = malloc(N), *seen = calloc(N, 1);
    uint32_t st = 12345;
    for (int trial = 0; trial < 4; trial++) {
        for (int i = 0; i < N; i++) {
            st = st * 1664525u + 1013904223u;
            double u = (st >> 8) / (double)(1u << 24);
            static const double scale[4] = {1.0, 4.0, 12.0, 40.0}; /* nearly flat .. peaked */
            x[i] = (float)(floor(u * scale[trial] * 64.0) / 64.0); /* steps of 1/64: ties */
            if (i % 97 == 0) x[i] = -INFINITY;
            order[i] = i;
        }
        sort_keys = x;
        qsort(order, N, sizeof *order, by_logit_desc);
        float top_p = 0.5f + 0.15f * (float)trial;
        double z = 0, cum = 0;
        for (int i = 0; i < N; i++) if (x[order[i]] > -INFINITY) z += exp((double)x[order[i]] - x[order[0]]);
        memset(in, 0, N);
        int keep = 0;
        for (int i = 0; i < N; i++) {
            in[order[i]] = 1;
            keep++;
            cum += exp((double)x[order[i]] - x[order[0]]);
            if (cum >= top_p * z) break;
        }
        ps_sampler *s = make(1.0f, 0, top_p, (uint64_t)trial);
        int out = 0;
        memset(seen, 0, N);
        for (int d = 0; d < 1500; d++) {
            int32_t t = ps_sampler_sample(s, x, N);
            if (t < 0 || t >= N || !in[t]) out++;
            else seen[t] = 1;
        }
        CHECK(out == 0);
        int hit = 0;
        for (int i = 0; i < N; i++) hit += seen[i];
        if (!(hit > (keep < 600 ? keep / 2 : 300))) fprintf(stderr, "keep %d hit %d\n", keep, hit);
        CHECK(hit > (keep < 600 ? keep / 2 : 300));
        ps_sampler_free(s);
    }
    free(x); free(order); free(in); free(seen);
}

TEST(seeded_and_reproducible) {
    float x[1000];
    for (int i = 0; i < 1000; i++) x[i] = 0.0f;
    /* uniform logits in id order: token = floor(1000 * u). The expected
     * values come from an independent xoshiro256** (splitmix64 seeding) */
    ps_sampler *s = make(1.0f, 0, 1.0f, 42);
    CHECK(ps_sampler_sample(s, x, 1000) == 83);
    CHECK(ps_sampler_sample(s, x, 1000) == 378);
    CHECK(ps_sampler_sample(s, x, 1000) == 680);
    ps_sampler_free(s);
    /* same seed, same sequence; another seed, another sequence */
    ps_sampler *a = make(0.7f, 50, 0.9f, 2024), *b = make(0.7f, 50, 0.9f, 2024), *c = make(0.7f, 50, 0.9f, 2025);
    for (int i = 0; i < 1000; i++) x[i] = (float)((i * 7919) % 1000) / 100.0f;
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t ta = ps_sampler_sample(a, x, 1000), tb = ps_sampler_sample(b, x, 1000);
        int32_t tc = ps_sampler_sample(c, x, 1000);
        same &= ta == tb;
        differ += ta != tc;
    }
    CHECK(same);
    CHECK(differ > 50);
    ps_sampler_free(a);
    ps_sampler_free(b);
    ps_sampler_free(c);
    ps_sampler_params d = ps_sampler_default_params();
    CHECK(d.temperature > 0.0f && d.top_k > 0 && d.top_p > 0.0f && d.top_p <= 1.0f);
}

int main(void) {
    RUN(greedy_is_argmax);
    RUN(bad_arguments);
    RUN(distribution_matches_softmax);
    RUN(top_k_and_top_p_cut);
    RUN(top_p_on_a_large_flat_vocab);
    RUN(top_p_matches_a_full_sort);
    RUN(seeded_and_reproducible);
    return CHECK_DONE();
}
