/* tokenizer.c: the vocabulary side of the tokenizer: reading the GGUF
 * tokenizer.ggml.* keys (tokens, types, scores, merges, special ids, EOG
 * rules, as llama.cpp reads them), and token -> bytes. Encoding text is in
 * tokenizer_encode.c, the pre-tokenizers in pretokenize.c.
 *
 * Two families:
 *  - "gpt2": byte-level BPE. The text is split into words by a
 *    pre-tokenizer (hand-written matchers for the regexes of "gpt2",
 *    "smollm", "llama-bpe" and "default"), each word's bytes become
 *    byte-level symbols, and the ranked merges are applied with a heap.
 *  - "llama": SentencePiece-style BPE. Spaces become U+2581, an optional
 *    space is prefixed, and adjacent symbols are merged best-score-first
 *    while the merged text is a token; leftovers fall back to <0xXX> bytes.
 * Special tokens (control / user-defined) are cut out of the text first,
 * longest first, as llama.cpp's partition step does.
 *
 * The tokenizer is immutable once loaded; encode allocates its own scratch,
 * so one tokenizer may serve several threads.
 */
#include "tokenizer_impl.h"
#include "prosparse.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t token_type_attr[7] = {
    0 /* undefined */, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER, ATTR_UNUSED, ATTR_BYTE,
};

/* ---- loading -------------------------------------------------------------------- */

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n && c < (1u << 31)) c <<= 1;
    return c;
}

/* Read an optional special-token id key: absent or out of range keeps *id. */
static int read_id(const ps_gguf *g, const char *key, int32_t n_vocab, int32_t *id) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0) return PS_OK;
    int type = ps_gguf_kv_type(g, i);
    if (type == PS_GGUF_STRING || type == PS_GGUF_ARRAY || type == PS_GGUF_BOOL || type == PS_GGUF_FLOAT32 ||
        type == PS_GGUF_FLOAT64)
        return ps_fail(PS_ERR_FORMAT, "%s has value type %d, expected an integer token id", key, type);
    int32_t v;
    if (ps_gguf_get_i32(g, key, &v) == 1 && v >= 0 && v < n_vocab) *id = v;
    ps_clear_error(); /* an id out of range (e.g. -1 or 2^32-1 for "none") is ignored */
    return PS_OK;
}

static int read_flag(const ps_gguf *g, const char *key, int *flag) {
    int v;
    int r = ps_gguf_get_bool(g, key, &v);
    if (r < 0) return PS_ERR_FORMAT;
    if (r == 1) *flag = v;
    return PS_OK;
}

static int32_t find_text(const ps_tokenizer *t, const char *s) { return vocab_find(t, s, strlen(s)); }

/* The first token of a list of names that exists, or -1. */
static int32_t find_any(const ps_tokenizer *t, const char *const *names) {
    for (; *names; names++) {
        int32_t id = find_text(t, *names);
        if (id >= 0) return id;
    }
    return -1;
}

/* Token texts llama.cpp recognises: end of turn / message, FIM tokens that
 * end generation, and every name it treats as end-of-generation. */
static const char *const EOT_NAMES[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
    "<end_of_utterance>", NULL};
static const char *const FIM_EOG_NAMES[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
    "<REPO>", "<reponame>", "<|file_sep|>", NULL};
static const char *const FIM_CONTROL_NAMES[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>",
    "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>",
    "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>",
    "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const EOG_NAMES[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~[", NULL};

/* Mark every existing token of a name list: control, and optionally EOG.
 * (llama.cpp takes one token per FIM family; a vocabulary with two names of
 * the same family would differ, none known does.) */
static void mark_names(ps_tokenizer *t, const char *const *names, int eog) {
    for (; *names; names++) {
        int32_t id = find_text(t, *names);
        if (id < 0) continue;
        t->attr[id] |= ATTR_CONTROL;
        if (eog) t->eog[id] = 1;
    }
}

static int load_vocab(ps_tokenizer *t, const ps_gguf *g) {
    int et;
    uint64_t n;
    if (ps_gguf_arr_info(g, "tokenizer.ggml.tokens", &et, &n) != 0 || et != PS_GGUF_STRING)
        return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.tokens is missing or not a string array");
    if (n == 0 || n > (uint64_t)INT32_MAX / 2)
        return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries", (unsigned long long)n);
    t->n_vocab = (int32_t)n;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        ps_str s = ps_gguf_arr_str(g, "tokenizer.ggml.tokens", i);
        total += s.n ? s.n : 24;
    }
    if (total >= UINT32_MAX) return ps_fail(PS_ERR_FORMAT, "tokenizer vocabulary text too large");
    t->text = ps_malloc(total + 1);
    t->text_off = ps_malloc((n + 1) * sizeof *t->text_off);
    t->score = ps_calloc(n, sizeof *t->score);
    t->attr = ps_malloc(n);
    t->eog = ps_calloc(n, 1);
    t->vocab_cap = pow2_at_least(2 * n);
    t->vocab_hash = ps_malloc(t->vocab_cap * sizeof *t->vocab_hash);
    if (!t->text || !t->text_off || !t->score || !t->attr || !t->eog || !t->vocab_hash)
        return ps_fail(PS_ERR_MEMORY, "out of memory loading a %llu-token vocabulary", (unsigned long long)n);
    memset(t->vocab_hash, 0xff, t->vocab_cap * sizeof *t->vocab_hash);

    uint32_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        ps_str s = ps_gguf_arr_str(g, "tokenizer.ggml.tokens", i);
        t->text_off[i] = off;
        if (s.n == 0) /* as llama.cpp: an empty token gets a unique placeholder */
            off += (uint32_t)snprintf(t->text + off, 25, "[EMPTY_%llu]", (unsigned long long)i);
        else {
            memcpy(t->text + off, s.p, s.n);
            off += (uint32_t)s.n;
        }
        t->text_off[i + 1] = off;
        size_t m;
        const char *p = tok_text(t, (int32_t)i, &m);
        uint32_t mask = t->vocab_cap - 1, h = (uint32_t)fnv1a(p, m) & mask;
        for (; t->vocab_hash[h] >= 0; h = (h + 1) & mask) {
            size_t m2;
            const char *q = tok_text(t, t->vocab_hash[h], &m2);
            if (m2 == m && memcmp(p, q, m) == 0)
                return ps_fail(PS_ERR_FORMAT, "duplicate token in vocabulary: ids %d and %llu have the same text",
                               t->vocab_hash[h], (unsigned long long)i);
        }
        t->vocab_hash[h] = (int32_t)i;
    }

    /* scores (float32 or int32) and token types, each optional */
    if (ps_gguf_arr_info(g, "tokenizer.ggml.scores", &et, &n) == 0) {
        if ((et != PS_GGUF_FLOAT32 && et != PS_GGUF_INT32) || n < (uint64_t)t->n_vocab)
            return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.scores: need %d float32/int32 values", t->n_vocab);
        const uint8_t *d = ps_gguf_arr_data(g, "tokenizer.ggml.scores");
        for (int32_t i = 0; i < t->n_vocab; i++) {
            if (et == PS_GGUF_FLOAT32) memcpy(&t->score[i], d + 4 * (size_t)i, 4);
            else { int32_t v; memcpy(&v, d + 4 * (size_t)i, 4); t->score[i] = (float)v; }
        }
    } else if (ps_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.scores is not an array");
    }
    memset(t->attr, ATTR_NORMAL, (size_t)t->n_vocab);
    if (ps_gguf_arr_info(g, "tokenizer.ggml.token_type", &et, &n) == 0) {
        if (et != PS_GGUF_INT32 || n < (uint64_t)t->n_vocab)
            return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.token_type: need %d int32 values", t->n_vocab);
        const uint8_t *d = ps_gguf_arr_data(g, "tokenizer.ggml.token_type");
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int32_t v;
            memcpy(&v, d + 4 * (size_t)i, 4);
            t->attr[i] = (v >= 0 && v < 7) ? token_type_attr[v] : 0;
        }
    } else if (ps_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.token_type is not an array");
    }
    return PS_OK;
}

static int load_merges(ps_tokenizer *t, const ps_gguf *g) {
    int et;
    uint64_t n;
    if (ps_gguf_arr_info(g, "tokenizer.ggml.merges", &et, &n) != 0 || et != PS_GGUF_STRING)
        return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.merges is missing or not a string array (needed by gpt2 BPE)");
    if (n > (uint64_t)INT32_MAX / 4) return ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.merges: %llu entries", (unsigned long long)n);
    t->merge_cap = pow2_at_least(2 * n + 1);
    t->merge_key = ps_malloc(t->merge_cap * sizeof *t->merge_key);
    t->merge_rank = ps_malloc(t->merge_cap * sizeof *t->merge_rank);
    t->merge_out = ps_malloc(t->merge_cap * sizeof *t->merge_out);
    cvec buf = {0};
    if (!t->merge_key || !t->merge_rank || !t->merge_out)
        return ps_fail(PS_ERR_MEMORY, "out of memory for %llu merges", (unsigned long long)n);
    memset(t->merge_key, 0xff, t->merge_cap * sizeof *t->merge_key);
    for (uint64_t i = 0; i < n; i++) {
        ps_str s = ps_gguf_arr_str(g, "tokenizer.ggml.merges", i);
        const char *sp = s.n > 1 ? memchr(s.p + 1, ' ', s.n - 1) : NULL;
        if (!sp) continue; /* malformed: can never apply */
        size_t ln = (size_t)(sp - s.p), rn = s.n - ln - 1;
        int32_t l = vocab_find(t, s.p, ln), r = vocab_find(t, sp + 1, rn);
        if (l < 0 || r < 0) continue; /* a side that is no token never forms */
        buf.n = 0;
        if (cvec_put(&buf, s.p, ln) || cvec_put(&buf, sp + 1, rn)) {
            free(buf.v);
            return ps_fail(PS_ERR_MEMORY, "out of memory reading merges");
        }
        int32_t out = vocab_find(t, buf.v, buf.n);
        uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
        uint32_t mask = t->merge_cap - 1, h = (uint32_t)mix64(key) & mask;
        while (t->merge_key[h] != UINT64_MAX && t->merge_key[h] != key) h = (h + 1) & mask;
        if (t->merge_key[h] == key) continue; /* the first (best) rank wins */
        t->merge_key[h] = key;
        t->merge_rank[h] = (int32_t)i;
        t->merge_out[h] = out;
    }
    free(buf.v);
    return PS_OK;
}

/* tokenizer.ggml.pre names, grouped as llama.cpp groups them by regex. */
static const struct {
    const char *name;
    int pre, ignore_merges, add_bos;
} PRE_NAMES[] = {
    {"default", PS_PRE_DEFAULT, 0, 0},
    {"gpt-2", PS_PRE_GPT2, 0, 0}, {"gpt2", PS_PRE_GPT2, 0, 0}, {"phi-2", PS_PRE_GPT2, 0, 0},
    {"mpt", PS_PRE_GPT2, 0, 0}, {"olmo", PS_PRE_GPT2, 0, 0},
    {"smollm", PS_PRE_SMOLLM, 0, 0}, {"starcoder", PS_PRE_SMOLLM, 0, 0}, {"refact", PS_PRE_SMOLLM, 0, 0},
    {"command-r", PS_PRE_SMOLLM, 0, 0},
    {"llama-bpe", PS_PRE_LLAMA3, 1, 1}, {"llama3", PS_PRE_LLAMA3, 1, 1}, {"llama-v3", PS_PRE_LLAMA3, 1, 1},
    {"dbrx", PS_PRE_LLAMA3, 0, 0}, {"smaug-bpe", PS_PRE_LLAMA3, 0, 0},
    {"qwen2", PS_PRE_QWEN2, 0, 0}, {"deepseek-r1-qwen", PS_PRE_QWEN2, 0, 0},
};

static int load_pre(ps_tokenizer *t, const ps_gguf *g) {
    ps_str pre = {"default", 7}; /* llama.cpp's fallback when the key is absent */
    int r = ps_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (r < 0) return PS_ERR_FORMAT;
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0]; i++) {
        if (!ps_str_eq(pre, PRE_NAMES[i].name)) continue;
        t->pre = PRE_NAMES[i].pre;
        t->ignore_merges = PRE_NAMES[i].ignore_merges;
        t->add_bos = PRE_NAMES[i].add_bos;
        return PS_OK;
    }
    char nb[64];
    size_t k = pre.n < sizeof nb - 1 ? (size_t)pre.n : sizeof nb - 1;
    memcpy(nb, pre.p, k);
    nb[k] = '\0';
    return ps_fail(PS_ERR_UNSUPPORTED, "pre-tokenizer '%s' is not supported (smollm, llama-bpe, qwen2, gpt-2, "
                   "default and their aliases are)", nb);
}

/* Decoded bytes of token id (as llama.cpp's token_to_piece with special=1).
 * cp_byte: the inverse byte-level map (code point < 324 -> byte, or -1). */
static int decode_token(const ps_tokenizer *t, int32_t id, const int16_t *cp_byte, cvec *out) {
    size_t n;
    const char *s = tok_text(t, id, &n);
    uint8_t a = t->attr[id];
    if (a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER)) return cvec_put(out, s, n);
    if (a & ATTR_NORMAL) {
        if (t->kind == KIND_SPM) { /* U+2581 -> space */
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    if (cvec_put(out, " ", 1)) return -1;
                    i += 3;
                } else {
                    if (cvec_put(out, s + i, 1)) return -1;
                    i++;
                }
            }
            return 0;
        }
        /* byte-level: each char stands for one byte */
        for (size_t i = 0; i < n;) {
            uint32_t cp = ps_utf8_next((const unsigned char *)s, n, &i);
            int b = cp < 324 ? cp_byte[cp] : -1;
            if (b >= 0) {
                char ch = (char)b;
                if (cvec_put(out, &ch, 1)) return -1;
            } else { /* not a byte-level char: keep it as UTF-8 */
                char u[4];
                if (cvec_put(out, u, (size_t)ps_utf8_put(cp, u))) return -1;
            }
        }
        return 0;
    }
    if ((a & ATTR_BYTE) && n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
        char hex[3] = {s[3], s[4], 0};
        char ch = (char)strtol(hex, NULL, 16);
        return cvec_put(out, &ch, 1);
    }
    return 0; /* unused / undefined tokens render as nothing */
}

static int build_pieces(ps_tokenizer *t) {
    cvec out = {0};
    t->piece_off = ps_malloc(((size_t)t->n_vocab + 1) * sizeof *t->piece_off);
    if (!t->piece_off) return ps_fail(PS_ERR_MEMORY, "out of memory for token pieces");
    int16_t cp_byte[324];
    memset(cp_byte, 0xff, sizeof cp_byte);
    for (int b = 0; b < 256; b++) cp_byte[ps_byte_to_cp(b)] = (int16_t)b;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->piece_off[i] = (uint32_t)out.n;
        if (decode_token(t, i, cp_byte, &out)) {
            free(out.v);
            return ps_fail(PS_ERR_MEMORY, "out of memory for token pieces");
        }
    }
    t->piece_off[t->n_vocab] = (uint32_t)out.n;
    t->piece = out.v ? out.v : ps_malloc(1);
    return t->piece ? PS_OK : ps_fail(PS_ERR_MEMORY, "out of memory for token pieces");
}

typedef struct { uint32_t len; int32_t id; } len_id;

static int cmp_longest_first(const void *a, const void *b) {
    const len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Tokens cut out of the text before BPE: control, user-defined, unknown. */
static int build_specials(ps_tokenizer *t) {
    len_id *tmp = ps_malloc(((size_t)t->n_vocab) * sizeof *tmp);
    t->special = ps_malloc(((size_t)t->n_vocab) * sizeof *t->special);
    if (!tmp || !t->special) {
        free(tmp);
        return ps_fail(PS_ERR_MEMORY, "out of memory for special tokens");
    }
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER | ATTR_UNKNOWN))
            tmp[n++] = (len_id){t->text_off[i + 1] - t->text_off[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_longest_first);
    for (int32_t i = 0; i < n; i++) t->special[i] = tmp[i].id;
    t->n_special = n;
    free(tmp);
    return PS_OK;
}

static int load_specials(ps_tokenizer *t, const ps_gguf *g) {
    /* llama.cpp's defaults when the keys are absent */
    if (t->kind == KIND_SPM) { t->bos = 1; t->eos = 2; t->unk = 0; }
    else { t->bos = 11; t->eos = 11; t->unk = -1; }
    t->eot = t->eom = -1;
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
    if (t->unk >= t->n_vocab) t->unk = -1;
    if (read_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos) ||
        read_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos) ||
        read_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot) ||
        read_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom) ||
        read_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk) ||
        read_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos) ||
        read_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix))
        return PS_ERR_FORMAT;

    if (t->eot < 0) {
        t->eot = find_any(t, EOT_NAMES);
        if (t->eot >= 0) t->attr[t->eot] |= ATTR_CONTROL;
    }
    if (t->eom < 0) {
        t->eom = find_text(t, "<|eom_id|>");
        if (t->eom >= 0) t->attr[t->eom] |= ATTR_CONTROL;
    }
    mark_names(t, FIM_CONTROL_NAMES, 0);
    mark_names(t, FIM_EOG_NAMES, 1);
    mark_names(t, EOG_NAMES, 1);
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;
    /* llama.cpp: with <|return|>+<|call|> (or <|calls|>+<|flush|>), <|end|> is
     * an ordinary user-defined token, not an end of generation */
    int32_t end = find_text(t, "<|end|>"), ret = find_text(t, "<|return|>"), call = find_text(t, "<|call|>");
    int32_t calls = find_text(t, "<|calls|>"), flush = find_text(t, "<|flush|>");
    if (end >= 0 && ((ret >= 0 && (call >= 0 || calls >= 0)) || ((call >= 0 || calls >= 0) && flush >= 0))) {
        t->eog[end] = 0;
        t->attr[end] = ATTR_USER;
    }
    int32_t s_end = find_text(t, "</s>");
    if (s_end >= 0 && find_text(t, "<|tool_response>") >= 0) {
        t->eog[s_end] = 0;
        t->attr[s_end] = ATTR_NORMAL;
    }
    return PS_OK;
}

ps_tokenizer *ps_tokenizer_load(const ps_gguf *g) {
    if (!g) {
        ps_fail(PS_ERR_ARG, "tokenizer: no GGUF file");
        return NULL;
    }
    ps_tokenizer *t = ps_calloc(1, sizeof *t);
    if (!t) {
        ps_fail(PS_ERR_MEMORY, "out of memory for the tokenizer");
        return NULL;
    }
    ps_str model;
    int r = ps_gguf_get_str(g, "tokenizer.ggml.model", &model);
    int rc = PS_OK;
    if (r <= 0) {
        if (r == 0) ps_fail(PS_ERR_FORMAT, "tokenizer.ggml.model is missing: the file has no vocabulary");
        rc = PS_ERR_FORMAT;
    } else if (ps_str_eq(model, "gpt2")) {
        t->kind = KIND_BPE;
        rc = load_pre(t, g);
    } else if (ps_str_eq(model, "llama")) {
        t->kind = KIND_SPM;
        t->add_bos = 1;
        t->add_space_prefix = 1;
    } else {
        char nb[64];
        size_t k = model.n < sizeof nb - 1 ? (size_t)model.n : sizeof nb - 1;
        memcpy(nb, model.p, k);
        nb[k] = '\0';
        rc = ps_fail(PS_ERR_UNSUPPORTED, "tokenizer model '%s' is not supported (gpt2 and llama are)", nb);
    }
    if (!rc) rc = load_vocab(t, g);
    if (!rc && t->kind == KIND_BPE) rc = load_merges(t, g);
    if (!rc) rc = load_specials(t, g);
    if (!rc) {
        for (int b = 0; b < 256; b++) {
            char u[8];
            size_t n;
            if (t->kind == KIND_BPE) {
                n = (size_t)ps_utf8_put(ps_byte_to_cp(b), u);
                t->byte_id[b] = vocab_find(t, u, n);
            } else {
                static const char hex[] = "0123456789ABCDEF";
                char s[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
                t->byte_id[b] = vocab_find(t, s, 6);
                if (t->byte_id[b] < 0) {
                    u[0] = (char)b;
                    t->byte_id[b] = vocab_find(t, u, 1);
                }
            }
        }
        if (t->add_bos && t->bos < 0) t->add_bos = 0;
        rc = build_specials(t);
    }
    if (!rc) rc = build_pieces(t);
    if (rc) {
        ps_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void ps_tokenizer_free(ps_tokenizer *t) {
    if (!t) return;
    void *owned[] = {t->text, t->text_off, t->score, t->attr, t->eog, t->vocab_hash, t->merge_key,
                     t->merge_rank, t->merge_out, t->special, t->piece, t->piece_off};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
    free(t);
}

int32_t ps_tokenizer_n_vocab(const ps_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t ps_tokenizer_bos(const ps_tokenizer *t) { return t ? t->bos : -1; }
int32_t ps_tokenizer_eos(const ps_tokenizer *t) { return t ? t->eos : -1; }
int32_t ps_tokenizer_eot(const ps_tokenizer *t) { return t ? t->eot : -1; }
int ps_tokenizer_add_bos(const ps_tokenizer *t) { return t ? t->add_bos : 0; }
int ps_tokenizer_is_eog(const ps_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab && t->eog[id];
}

int ps_tokenizer_piece(const ps_tokenizer *t, int32_t id, char *buf, int32_t buflen, int special) {
    if (!t) return ps_fail(PS_ERR_ARG, "token_to_piece: no tokenizer");
    if (id < 0 || id >= t->n_vocab)
        return ps_fail(PS_ERR_ARG, "token id %d out of range [0, %d)", id, t->n_vocab);
    if (buflen < 0 || (buflen > 0 && !buf)) return ps_fail(PS_ERR_ARG, "token_to_piece: bad buffer");
    if (!special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) return 0;
    uint32_t n = t->piece_off[id + 1] - t->piece_off[id];
    uint32_t k = n < (uint32_t)buflen ? n : (uint32_t)buflen;
    if (k) memcpy(buf, t->piece + t->piece_off[id], k);
    return (int)n;
}
