/* test_forward.c: tiny models' forward passes against stored reference
 * logits, at every SIMD level this CPU runs (make test-neon: the NEON
 * levels, under qemu). The files and logits are scripts/make_forward_fixture.py's:
 * transformers on the same rounded weights, an independent engine. F32 must
 * agree to 1e-4 of the largest |logit| (test_logits.py's bound); the
 * quantized files, whose activations the engine rounds to 8 bits as ggml
 * does, to 5e-2 and the same top token at most positions. Every level must
 * also give the scalar level's logits to 1e-5 (they differ only in exp). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "prosparse.h"

#define DATA "native/tests/data/"

typedef struct {
    int32_t n_tok, n_vocab, tokens[64];
    float *logits;
} reference;

static int read_reference(const char *path, reference *r) {
    FILE *f = fopen(path, "rb");
    if (!f) return perror(path), -1;
    int ok = fread(&r->n_tok, 4, 2, f) == 2 && r->n_tok > 0 && r->n_tok <= 64 && r->n_vocab > 0 &&
             fread(r->tokens, 4, (size_t)r->n_tok, f) == (size_t)r->n_tok;
    const size_t n = ok ? (size_t)r->n_tok * (size_t)r->n_vocab : 0;
    r->logits = ok ? malloc(n * sizeof(float)) : NULL;
    ok = ok && r->logits && fread(r->logits, sizeof(float), n, f) == n;
    fclose(f);
    return ok ? 0 : -1;
}

/* max |a - b| / max |b| (comparisons, not fmax: gcc 12 for aarch64 fails to
 * vectorise an fmax reduction of doubles) */
static double rel_err(const float *a, const float *b, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]), v = fabs((double)b[i]);
        if (d > e) e = d;
        if (v > m) m = v;
    }
    return e / m;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

/* All positions' logits of the model at the level in force, or NULL. */
static float *run(const char *gguf, const reference *r, int mode) {
    ps_model *m = ps_model_load(gguf);
    if (!m) return fprintf(stderr, "%s: %s\n", gguf, ps_last_error()), NULL;
    ps_session_params p = ps_session_default_params();
    p.n_threads = 2, p.n_ctx = 64, p.n_batch = 5, p.mode = mode; /* several batches, the last partial */
    p.cache_type = PS_CACHE_F32;                                   /* exact, as the reference */
    ps_session *s = ps_session_new(m, &p);
    float *out = malloc(sizeof(float) * (size_t)r->n_tok * (size_t)r->n_vocab);
    if (!s || ps_session_eval(s, r->tokens, r->n_tok, out) != PS_OK) {
        fprintf(stderr, "%s: %s\n", gguf, ps_last_error());
        free(out), out = NULL;
    }
    ps_session_free(s);
    ps_model_free(m);
    return out;
}

static void check_model(const char *name, double tol, int mode) {
    char gguf[256], logits[256];
    snprintf(gguf, sizeof gguf, DATA "%s.gguf", name);
    snprintf(logits, sizeof logits, DATA "%s.logits", name);
    reference r;
    if (read_reference(logits, &r)) {
        CHECK(!"reference logits readable");
        return;
    }
    const size_t n = (size_t)r.n_tok * (size_t)r.n_vocab;
    float *scalar = NULL;
    for (int level = 0; level < PS_SIMD_COUNT; level++) {
        if (ps_simd_set(level) != level) continue;
        float *y = run(gguf, &r, mode);
        CHECK(y != NULL);
        if (!y) continue;
        int same_top = 0;
        for (int t = 0; t < r.n_tok; t++)
            same_top += argmax(y + (size_t)t * r.n_vocab, r.n_vocab) == argmax(r.logits + (size_t)t * r.n_vocab, r.n_vocab);
        const double e = rel_err(y, r.logits, n), es = scalar ? rel_err(y, scalar, n) : 0.0;
        printf("  %s mode %d level %d: rel err %.2e vs transformers, %.2e vs scalar, top-1 %d/%d\n", name, mode,
               level, e, es, same_top, r.n_tok);
        CHECK(e <= tol);
        CHECK(es <= 1e-5);
        CHECK(same_top >= r.n_tok - 1);
        if (!scalar) scalar = y;
        else free(y);
    }
    ps_simd_set(ps_simd_supported());
    free(scalar);
    free(r.logits);
}

TEST(test_f32) { check_model("fwd_f32", 1e-4, PS_MODE_DENSE); }
TEST(test_q8_0) { check_model("fwd_q8_0", 5e-2, PS_MODE_DENSE); }
TEST(test_q4_0) { check_model("fwd_q4_0", 5e-2, PS_MODE_DENSE); }
TEST(test_q4_1) { check_model("fwd_q4_1", 5e-2, PS_MODE_DENSE); }
TEST(test_f32_relu) {
    check_model("fwd_f32_relu", 1e-4, PS_MODE_DENSE);
    check_model("fwd_f32_relu", 1e-4, PS_MODE_SPARSE);
}

int main(void) {
    RUN(test_f32);
    RUN(test_q8_0);
    RUN(test_q4_0);
    RUN(test_q4_1);
    RUN(test_f32_relu);
    return CHECK_DONE();
}
