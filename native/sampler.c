/* sampler.c: pick the next token from logits.
 *
 * Greedy when temperature <= 0; otherwise, in llama.cpp's order: keep the
 * top_k logits, keep the smallest best-first prefix of those (by probability
 * at temperature 1) whose mass reaches top_p, scale by 1/temperature, and
 * draw from the softmax with a seeded xoshiro256** generator, so a seed
 * gives the same tokens on every platform. Without top_k the vocabulary is
 * never fully sorted (bucketed top_p), so a flat distribution stays cheap.
 */
#include "prosparse.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ps_sampler {
    ps_sampler_params p;
    uint64_t s[4];        /* xoshiro256** state */
    int32_t *idx;         /* [cap] candidate token ids, best first */
    float *val;           /* [cap] their logits */
    int32_t cap;
};

/* ---- random numbers ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(ps_sampler *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double next_unit(ps_sampler *r) { return (double)(next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

/* ---- params, new/free ---------------------------------------------------- */

ps_sampler_params ps_sampler_default_params(void) {
    ps_sampler_params p = {0.8f, 40, 0.95f, 0};
    return p;
}

ps_sampler *ps_sampler_new(const ps_sampler_params *params) {
    ps_sampler_params p = params ? *params : ps_sampler_default_params();
    if (isnan(p.temperature) || isnan(p.top_p)) {
        ps_fail(PS_ERR_ARG, "sampler: temperature and top_p must be numbers");
        return NULL;
    }
    ps_sampler *r = ps_calloc(1, sizeof *r);
    if (!r) {
        ps_fail(PS_ERR_MEMORY, "sampler: out of memory");
        return NULL;
    }
    r->p = p;
    uint64_t x = p.seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    return r;
}

void ps_sampler_free(ps_sampler *r) {
    if (!r) return;
    free(r->idx);
    free(r->val);
    free(r);
}

/* ---- candidate selection ----------------------------------------------------- */

/* First index of the largest logit (NaN ignored), -1 if none is > -inf. */
static int32_t argmax(const float *x, int32_t n) {
    int32_t best = -1;
    float bv = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (x[i] > bv) { bv = x[i]; best = i; }
    return best;
}

/* Min-heap on val (ties: larger id is "smaller", so lower ids survive). */
static int heap_less(const float *v, const int32_t *id, int32_t a, int32_t b) {
    return v[a] < v[b] || (v[a] == v[b] && id[a] > id[b]);
}

static void sift_down(float *v, int32_t *id, int32_t n, int32_t i) {
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && heap_less(v, id, c + 1, c)) c++;
        if (!heap_less(v, id, c, i)) return;
        float tv = v[i]; v[i] = v[c]; v[c] = tv;
        int32_t ti = id[i]; id[i] = id[c]; id[c] = ti;
        i = c;
    }
}

/* The k best finite logits, best first (ties: lower id first). Returns count. */
static int32_t top_k(ps_sampler *r, const float *logits, int32_t n, int32_t k) {
    float *v = r->val;
    int32_t *id = r->idx, m = 0;
    for (int32_t i = 0; i < n; i++) {
        float x = logits[i];
        if (!(x > -INFINITY)) continue; /* -inf and NaN never win */
        if (m < k) {
            v[m] = x;
            id[m] = i;
            m++;
            if (m == k)
                for (int32_t j = k / 2 - 1; j >= 0; j--) sift_down(v, id, k, j);
        } else if (x > v[0]) {
            v[0] = x;
            id[0] = i;
            sift_down(v, id, k, 0);
        }
    }
    if (m < k)
        for (int32_t j = m / 2 - 1; j >= 0; j--) sift_down(v, id, m, j);
    /* heap-sort: repeatedly move the smallest to the end -> best first */
    for (int32_t end = m - 1; end > 0; end--) {
        float tv = v[0]; v[0] = v[end]; v[end] = tv;
        int32_t ti = id[0]; id[0] = id[end]; id[end] = ti;
        sift_down(v, id, end, 0);
    }
    return m;
}

/* Sort m (value, id) pairs best first (ties: lower id first). */
static void sort_desc(float *v, int32_t *id, int32_t m) {
    for (int32_t j = m / 2 - 1; j >= 0; j--) sift_down(v, id, m, j);
    for (int32_t end = m - 1; end > 0; end--) {
        float tv = v[0]; v[0] = v[end]; v[end] = tv;
        int32_t ti = id[0]; id[0] = id[end]; id[end] = ti;
        sift_down(v, id, end, 0);
    }
}

/* top_p over m candidates already sorted best first: the length of the
 * shortest prefix whose probability mass (temperature 1) reaches top_p. */
static int32_t top_p_prefix(const float *v, int32_t m, float mx, float top_p) {
    double z = 0, cum = 0;
    for (int32_t i = 0; i < m; i++) z += exp((double)v[i] - mx);
    for (int32_t i = 0; i < m; i++) {
        cum += exp((double)v[i] - mx);
        if (cum >= top_p * z) return i + 1;
    }
    return m;
}

/* top_p over the whole vocabulary without sorting it: logits are bucketed by
 * their distance below the max, whole buckets are kept while the mass stays
 * under top_p, and only the bucket where it crosses is sorted. Kept ids go
 * to r->idx/val (that bucket's best first, at the end); returns the count. */
enum { TOP_P_BUCKETS = 1024 };
#define TOP_P_SPAN 32.0 /* nats below the max; further logits share the last bucket */

static int bucket_of(float mx, float x) {
    double d = (double)mx - x;
    if (!(d < TOP_P_SPAN)) return TOP_P_BUCKETS - 1;
    int b = (int)(d * (TOP_P_BUCKETS / TOP_P_SPAN));
    return b < TOP_P_BUCKETS ? b : TOP_P_BUCKETS - 1;
}

static int32_t top_p_all(ps_sampler *r, const float *x, int32_t n, float mx, float top_p) {
    double mass[TOP_P_BUCKETS] = {0}, z = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!(x[i] > -INFINITY)) continue;
        double e = exp((double)x[i] - mx);
        z += e;
        mass[bucket_of(mx, x[i])] += e;
    }
    double target = top_p * z, cum = 0;
    int edge = TOP_P_BUCKETS - 1;
    for (int b = 0; b < TOP_P_BUCKETS; b++) {
        if (cum + mass[b] >= target) { edge = b; break; }
        cum += mass[b];
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) /* whole buckets above the edge, in id order */
        if (x[i] > -INFINITY && bucket_of(mx, x[i]) < edge) { r->idx[m] = i; r->val[m] = x[i]; m++; }
    int32_t m0 = m;
    for (int32_t i = 0; i < n; i++)
        if (x[i] > -INFINITY && bucket_of(mx, x[i]) == edge) { r->idx[m] = i; r->val[m] = x[i]; m++; }
    sort_desc(r->val + m0, r->idx + m0, m - m0);
    for (int32_t i = m0; i < m; i++) {
        cum += exp((double)r->val[i] - mx);
        if (cum >= target) return i + 1;
    }
    return m;
}

int32_t ps_sampler_sample(ps_sampler *r, const float *logits, int32_t n_vocab) {
    if (!r || !logits || n_vocab <= 0) return ps_fail(PS_ERR_ARG, "sample: bad arguments (n_vocab %d)", n_vocab);
    const ps_sampler_params *p = &r->p;
    int32_t best = argmax(logits, n_vocab);
    if (best < 0) return ps_fail(PS_ERR_ARG, "sample: no finite logit among %d", n_vocab);
    if (p->temperature <= 0.0f || p->top_k == 1 || p->top_p <= 0.0f) return best;

    if (r->cap < n_vocab) {
        int32_t *idx = ps_realloc(r->idx, (size_t)n_vocab * sizeof *idx);
        if (idx) r->idx = idx;
        float *val = ps_realloc(r->val, (size_t)n_vocab * sizeof *val);
        if (val) r->val = val;
        if (!idx || !val) return ps_fail(PS_ERR_MEMORY, "sample: out of memory");
        r->cap = n_vocab;
    }
    int32_t k = (p->top_k > 0 && p->top_k < n_vocab) ? p->top_k : n_vocab;
    float mx = logits[best];
    int32_t m;
    if (k < n_vocab) {
        m = top_k(r, logits, n_vocab, k);
        if (p->top_p < 1.0f) m = top_p_prefix(r->val, m, mx, p->top_p);
    } else if (p->top_p < 1.0f) {
        m = top_p_all(r, logits, n_vocab, mx, p->top_p);
    } else { /* every finite logit, in id order */
        m = 0;
        for (int32_t i = 0; i < n_vocab; i++)
            if (logits[i] > -INFINITY) { r->idx[m] = i; r->val[m] = logits[i]; m++; }
    }
    /* temperature, then draw */
    double z = 0;
    for (int32_t i = 0; i < m; i++) z += exp(((double)r->val[i] - mx) / p->temperature);
    double u = next_unit(r) * z, cum = 0;
    for (int32_t i = 0; i < m; i++) {
        cum += exp(((double)r->val[i] - mx) / p->temperature);
        if (u < cum) return r->idx[i];
    }
    return r->idx[m - 1];
}
