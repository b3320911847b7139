/* api.c: the public model, tokenizer and session functions of prosparse.h.
 * Every argument is checked here, so model.c and session.c can assume
 * valid input; errors return a code and set ps_last_error(). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attention.h"
#include "compute.h"
#include "ffn.h"
#include "model.h"
#include "prosparse.h"
#include "session.h"
#include "util.h"

#define MAX_CTX (1 << 20)

static const char *mode_name(int32_t mode) {
    switch (mode) {
    case PS_MODE_DENSE: return "dense";
    case PS_MODE_SPARSE: return "sparse";
    case PS_MODE_PREDICT: return "predict";
    case PS_MODE_THRESHOLD: return "threshold";
    }
    return NULL;
}

/* PS_OK for a mode this model can run (ffn.c says why not). */
static int check_mode(const ps_model *m, int32_t mode) {
    if (!mode_name(mode)) return ps_fail(PS_ERR_ARG, "unknown mode %d", (int)mode);
    return ps_ffn_check_mode(m, mode);
}

/* ---- model ------------------------------------------------------------- */

ps_model *ps_model_load_ex(const char *path, uint32_t flags) {
    if (!path) {
        ps_fail(PS_ERR_ARG, "model path is NULL");
        return NULL;
    }
    if (flags & ~(uint32_t)PS_LOAD_MAP_ONLY) {
        ps_fail(PS_ERR_ARG, "unknown load flags 0x%x", (unsigned)flags);
        return NULL;
    }
    return ps_model_open(path, !(flags & PS_LOAD_MAP_ONLY));
}

ps_model *ps_model_load(const char *path) { return ps_model_load_ex(path, 0); }

void ps_model_free(ps_model *model) { ps_model_close(model); }

int ps_model_get_info(const ps_model *m, ps_model_info *out) {
    if (!m || !out) return ps_fail(PS_ERR_ARG, "ps_model_get_info: NULL argument");
    const ps_hparams *hp = &m->hp;
    memset(out, 0, sizeof *out);
    snprintf(out->arch, sizeof out->arch, "%s", m->arch);
    snprintf(out->activation, sizeof out->activation, "%s", ps_act_name(hp->act));
    out->activation_threshold = hp->act_threshold;
#define FROM_HPARAMS(field) out->field = hp->field
    FROM_HPARAMS(n_vocab), FROM_HPARAMS(n_ctx_train), FROM_HPARAMS(n_embd), FROM_HPARAMS(n_ff);
    FROM_HPARAMS(n_layer), FROM_HPARAMS(n_head), FROM_HPARAMS(n_head_kv), FROM_HPARAMS(head_dim);
    FROM_HPARAMS(rope_freq_base), FROM_HPARAMS(rms_eps), FROM_HPARAMS(predictor_rank);
#undef FROM_HPARAMS
    out->tied_output = m->tied_output;
    out->has_predictor = hp->predictor_rank > 0;
    out->weight_type = m->layers[0].gate.type;
    out->n_params = m->n_params;
    out->file_size = (int64_t)ps_gguf_file_size(m->gguf);
    out->powerinfer = m->powerinfer;
    out->predictor_threshold = hp->pred_threshold;
    return PS_OK;
}

int ps_model_meta_str(const ps_model *m, const char *key, char *buf, size_t buflen) {
    if (!m || !key) return ps_fail(PS_ERR_ARG, "ps_model_meta_str: NULL argument");
    if (!buf && buflen > 0) return ps_fail(PS_ERR_ARG, "ps_model_meta_str: NULL buffer");
    ps_str s;
    int r = ps_gguf_get_str(m->gguf, key, &s);
    if (r < 0) return ps_fail(PS_ERR_FORMAT, "key %s is not a string", key);
    if (r == 0) return ps_fail(PS_ERR_ARG, "key %s not found", key);
    if (s.n > (uint64_t)INT32_MAX) return ps_fail(PS_ERR_FORMAT, "key %s: string too long", key);
    if (buflen > 0) {
        size_t k = s.n < buflen - 1 ? (size_t)s.n : buflen - 1;
        memcpy(buf, s.p, k);
        buf[k] = '\0';
    }
    return (int)s.n;
}

int ps_model_check_mode(const ps_model *m, int32_t mode) {
    if (!m) return ps_fail(PS_ERR_ARG, "ps_model_check_mode: model is NULL");
    return check_mode(m, mode);
}

/* ---- tokenizer --------------------------------------------------------- */

int32_t ps_token_bos(const ps_model *m) { return m ? ps_tokenizer_bos(m->tok) : -1; }
int32_t ps_token_eos(const ps_model *m) { return m ? ps_tokenizer_eos(m->tok) : -1; }
int32_t ps_token_eot(const ps_model *m) { return m ? ps_tokenizer_eot(m->tok) : -1; }

int ps_token_is_eog(const ps_model *m, int32_t token) {
    if (!m || token < 0 || token >= m->hp.n_vocab) return 0;
    return ps_tokenizer_is_eog(m->tok, token);
}

int ps_model_add_bos(const ps_model *m) { return m ? ps_tokenizer_add_bos(m->tok) : 0; }

int ps_tokenize(const ps_model *m, const char *text, int32_t len, int32_t *out, int32_t max_tokens,
                int add_bos, int parse_special) {
    if (!m) return ps_fail(PS_ERR_ARG, "ps_tokenize: model is NULL");
    if (len < 0) return ps_fail(PS_ERR_ARG, "ps_tokenize: negative length %d", (int)len);
    if (!text && len > 0) return ps_fail(PS_ERR_ARG, "ps_tokenize: text is NULL");
    if (max_tokens < 0) return ps_fail(PS_ERR_ARG, "ps_tokenize: negative max_tokens");
    if (!out && max_tokens > 0) return ps_fail(PS_ERR_ARG, "ps_tokenize: out is NULL");
    return ps_tokenizer_encode(m->tok, text ? text : "", len, out, max_tokens, add_bos, parse_special);
}

int ps_token_to_piece(const ps_model *m, int32_t token, char *buf, int32_t buflen, int special) {
    if (!m) return ps_fail(PS_ERR_ARG, "ps_token_to_piece: model is NULL");
    if (token < 0 || token >= m->hp.n_vocab)
        return ps_fail(PS_ERR_ARG, "token %d is outside [0, %d)", (int)token, (int)m->hp.n_vocab);
    if (buflen < 0 || (!buf && buflen > 0)) return ps_fail(PS_ERR_ARG, "ps_token_to_piece: bad buffer");
    return ps_tokenizer_piece(m->tok, token, buf, buflen, special);
}

/* ---- session ----------------------------------------------------------- */

ps_session_params ps_session_default_params(void) {
    ps_session_params p = {.n_threads = 0, .n_ctx = 0, .n_batch = 0, .mode = PS_MODE_DENSE,
                           .cache_type = PS_CACHE_F16};
    return p;
}

ps_session *ps_session_new(const ps_model *m, const ps_session_params *params) {
    if (!m) {
        ps_fail(PS_ERR_ARG, "ps_session_new: model is NULL");
        return NULL;
    }
    ps_session_params p = params ? *params : ps_session_default_params();
    if (p.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (int32_t)(n < PS_MAX_THREADS ? n : PS_MAX_THREADS) : 1;
    }
    if (p.n_threads > PS_MAX_THREADS) {
        ps_fail(PS_ERR_ARG, "n_threads %d is more than %d", (int)p.n_threads, PS_MAX_THREADS);
        return NULL;
    }
    if (p.n_ctx <= 0) {
        int32_t train = m->hp.n_ctx_train;
        p.n_ctx = train > 0 && train < 4096 ? train : 4096;
    }
    if (p.n_ctx > MAX_CTX) {
        ps_fail(PS_ERR_ARG, "n_ctx %d is more than %d", (int)p.n_ctx, MAX_CTX);
        return NULL;
    }
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (check_mode(m, p.mode) != PS_OK) return NULL;
    if (p.cache_type < PS_CACHE_F16 || p.cache_type > PS_CACHE_Q8_0) {
        ps_fail(PS_ERR_ARG, "unknown KV cache type %d", (int)p.cache_type);
        return NULL;
    }
    if (ps_cache_row_bytes(p.cache_type, m->hp.head_dim) == 0) {
        ps_fail(PS_ERR_ARG, "a q8_0 KV cache needs head_dim a multiple of 32 (this model's is %d)",
                (int)m->hp.head_dim);
        return NULL;
    }
    if (!isfinite(p.activation_threshold) || p.activation_threshold < 0.0f) {
        ps_fail(PS_ERR_ARG, "activation threshold %g must be a finite number >= 0", p.activation_threshold);
        return NULL;
    }
    if (p.activation_threshold > 0.0f && m->hp.act != PS_ACT_RELU && m->hp.act != PS_ACT_FATRELU) {
        ps_fail(PS_ERR_ARG, "an activation threshold applies to relu and fatrelu models; this one uses %s",
                ps_act_name(m->hp.act));
        return NULL;
    }
    return ps_session_create(m, &p);
}

void ps_session_free(ps_session *s) { ps_session_destroy(s); }

int ps_session_eval(ps_session *s, const int32_t *tokens, int32_t n, float *all_logits) {
    if (!s) return ps_fail(PS_ERR_ARG, "ps_session_eval: session is NULL");
    if (n < 0) return ps_fail(PS_ERR_ARG, "ps_session_eval: negative token count %d", (int)n);
    if (n == 0) return PS_OK;
    if (!tokens) return ps_fail(PS_ERR_ARG, "ps_session_eval: tokens is NULL");
    const int32_t n_vocab = s->model->hp.n_vocab;
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return ps_fail(PS_ERR_ARG, "token %d at index %d is outside [0, %d)", (int)tokens[i],
                           (int)i, (int)n_vocab);
    if ((int64_t)s->n_past + n > s->n_ctx)
        return ps_fail(PS_ERR_CONTEXT, "context full: %d tokens in the cache + %d new > n_ctx %d",
                       (int)s->n_past, (int)n, (int)s->n_ctx);
    return ps_session_forward(s, tokens, n, all_logits);
}

const float *ps_session_logits(const ps_session *s) {
    return s && s->has_logits ? s->logits : NULL;
}

int32_t ps_session_n_past(const ps_session *s) { return s ? s->n_past : 0; }

int32_t ps_session_n_ctx(const ps_session *s) { return s ? s->n_ctx : 0; }

int64_t ps_session_kv_bytes(const ps_session *s) { return s ? s->kv_bytes : 0; }

/* The layers' paused decisions (ffn.h) belong to the tokens and mode
 * before a reset or a mode switch. */
static void forget_ffn_pauses(ps_session *s) {
    memset(s->ffn_pause, 0, sizeof *s->ffn_pause * (size_t)s->model->hp.n_layer);
}

void ps_session_reset(ps_session *s) {
    if (!s) return;
    s->n_past = 0;
    s->has_logits = 0;
    memset(s->stats, 0, sizeof(ps_layer_stats) * (size_t)s->model->hp.n_layer);
    forget_ffn_pauses(s);
}

int ps_session_truncate(ps_session *s, int32_t n_keep) {
    if (!s) return ps_fail(PS_ERR_ARG, "ps_session_truncate: session is NULL");
    if (n_keep < 0 || n_keep > s->n_past)
        return ps_fail(PS_ERR_ARG, "n_keep %d is outside [0, %d]", (int)n_keep, (int)s->n_past);
    if (n_keep < s->n_past) s->has_logits = 0; /* they belonged to a dropped position */
    s->n_past = n_keep;
    return PS_OK;
}

int ps_session_set_mode(ps_session *s, int32_t mode) {
    if (!s) return ps_fail(PS_ERR_ARG, "ps_session_set_mode: session is NULL");
    int rc = check_mode(s->model, mode);
    if (rc != PS_OK) return rc;
    s->mode = mode;
    forget_ffn_pauses(s);
    return PS_OK;
}

int ps_session_set_measure(ps_session *s, int on) {
    if (!s) return ps_fail(PS_ERR_ARG, "ps_session_set_measure: session is NULL");
    return ps_session_measure(s, on);
}

int32_t ps_session_get_mode(const ps_session *s) { return s ? s->mode : -1; }

int ps_session_layer_stats(const ps_session *s, ps_layer_stats *out, int32_t max_layers) {
    if (!s) return ps_fail(PS_ERR_ARG, "ps_session_layer_stats: session is NULL");
    if (max_layers < 0 || (!out && max_layers > 0))
        return ps_fail(PS_ERR_ARG, "ps_session_layer_stats: bad output buffer");
    int32_t n = s->model->hp.n_layer;
    int32_t k = max_layers < n ? max_layers : n;
    if (k > 0) memcpy(out, s->stats, sizeof(ps_layer_stats) * (size_t)k);
    return n;
}
