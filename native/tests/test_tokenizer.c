/* test_tokenizer.c: the tokenizer on tiny vocabularies written here (exact
 * ids worked out by hand), bad vocabularies, and random input on the real
 * SmolLM2 vocabulary when $PROSPARSE_SMOLLM2 points at it (no crash, every
 * valid UTF-8 text round-trips). Comparisons with llama.cpp itself are in
 * tests/test_tokenizer.py. */
#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "prosparse.h"
#include "tokenizer.h"
#include "util.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- vocabulary keys on top of gguf_writer.h (the tokenizer needs no tensors) */

static void kv_bool(buf *b, const char *k, int v) {
    put_str(b, k); put_u32(b, PS_GGUF_BOOL); uint8_t x = (uint8_t)v; put(b, &x, 1);
}
static void kv_strs(buf *b, const char *k, const char *const *v, int n) {
    put_str(b, k); put_u32(b, PS_GGUF_ARRAY); put_u32(b, PS_GGUF_STRING); put_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(b, v[i]);
}
static void kv_i32s(buf *b, const char *k, const int32_t *v, int n) {
    put_str(b, k); put_u32(b, PS_GGUF_ARRAY); put_u32(b, PS_GGUF_INT32); put_u64(b, (uint64_t)n);
    put(b, v, 4 * (size_t)n);
}
static void kv_f32s(buf *b, const char *k, const float *v, int n) {
    put_str(b, k); put_u32(b, PS_GGUF_ARRAY); put_u32(b, PS_GGUF_FLOAT32); put_u64(b, (uint64_t)n);
    put(b, v, 4 * (size_t)n);
}
static void header(buf *b, uint64_t n_kv) { put(b, "GGUF", 4); put_u32(b, 3); put_u64(b, 0); put_u64(b, n_kv); }

static char tmpdir[256];
static int file_no = 0;

/* Write b, open it as GGUF and load a tokenizer (g stays open: the caller closes). */
static ps_tokenizer *load(buf *b, ps_gguf **g) {
    char path[512];
    snprintf(path, sizeof path, "%s/v%d.gguf", tmpdir, file_no++);
    FILE *f = fopen(path, "wb");
    fwrite(b->p, 1, b->n, f);
    fclose(f);
    free(b->p);
    memset(b, 0, sizeof *b);
    *g = ps_gguf_open(path);
    unlink(path);
    if (!*g) return NULL;
    return ps_tokenizer_load(*g);
}

static int encode(const ps_tokenizer *t, const char *s, int32_t *out, int special) {
    return ps_tokenizer_encode(t, s, (int32_t)strlen(s), out, 256, 0, special);
}

static int ids_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}
#define EXPECT_IDS(t, s, special, ...) do { \
    int32_t out_[256], want_[] = {__VA_ARGS__}; \
    int n_ = encode(t, s, out_, special); \
    int ok_ = ids_eq(out_, n_, want_, (int)(sizeof want_ / sizeof want_[0])); \
    if (!ok_) { fprintf(stderr, "  '%s': got", s); for (int i_ = 0; i_ < n_; i_++) fprintf(stderr, " %d", out_[i_]); \
                fprintf(stderr, "\n"); } \
    CHECK(ok_); } while (0)

/* ---- a byte-level BPE vocabulary ------------------------------------------------ */

static uint32_t byte_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256u + (uint32_t)n;
}

static char byte_chars[256][3];
enum { B0 = 3 }; /* id of byte b's token is B0 + b */
#define BT(c) (B0 + (unsigned char)(c))

/* ids: 0 <|endoftext|>, 1 <|im_start|>, 2 <|im_end|>, 3..258 bytes, then merges */
static const char *const MERGES[] = {"\xc4\xa0 t", "h e", "l l", "he ll", "hell o", "\xc4\xa0t he", "1 2",
                                     "\xc4\xa0 \xc4\xa0"};
static const char *const MERGED[] = {"\xc4\xa0t", "he", "ll", "hell", "hello", "\xc4\xa0the", "12",
                                     "\xc4\xa0\xc4\xa0"};
enum { N_MERGES = 8, ID_GT = 259, ID_HE, ID_LL, ID_HELL, ID_HELLO, ID_GTHE, ID_12, ID_2SP, N_BPE };

static buf bpe_vocab(const char *pre, int with_merges) {
    static const char *tokens[N_BPE];
    static int32_t types[N_BPE];
    tokens[0] = "<|endoftext|>"; tokens[1] = "<|im_start|>"; tokens[2] = "<|im_end|>";
    for (int i = 0; i < 3; i++) types[i] = 3;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_cp(b);
        char *u = byte_chars[b];
        if (cp < 0x80) { u[0] = (char)cp; u[1] = 0; }
        else { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); u[2] = 0; }
        tokens[B0 + b] = u;
        types[B0 + b] = 1;
    }
    for (int i = 0; i < N_MERGES; i++) { tokens[ID_GT + i] = MERGED[i]; types[ID_GT + i] = 1; }
    buf b = {0};
    header(&b, (uint64_t)(4 + (pre != NULL) + with_merges + 2));
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    if (pre) kv_str(&b, "tokenizer.ggml.pre", pre);
    kv_strs(&b, "tokenizer.ggml.tokens", tokens, N_BPE);
    kv_i32s(&b, "tokenizer.ggml.token_type", types, N_BPE);
    if (with_merges) kv_strs(&b, "tokenizer.ggml.merges", MERGES, N_MERGES);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    kv_bool(&b, "tokenizer.ggml.add_bos_token", 0);
    return b;
}

/* The BPE vocabulary with merges and pre-tokenizer `pre`, loaded; a failed
 * load counts as a failed CHECK and prints why. */
static ps_tokenizer *load_bpe(const char *pre, ps_gguf **g) {
    buf b = bpe_vocab(pre, 1);
    ps_tokenizer *t = load(&b, g);
    CHECK(t != NULL);
    if (!t) fprintf(stderr, "%s\n", ps_last_error());
    return t;
}

TEST(bpe_merges_by_rank) {
    ps_gguf *g;
    ps_tokenizer *t = load_bpe("gpt-2", &g);
    if (!t) { ps_gguf_close(g); return; }
    CHECK(ps_tokenizer_n_vocab(t) == N_BPE);
    EXPECT_IDS(t, "hello", 0, ID_HELLO);
    EXPECT_IDS(t, "hellohello", 0, ID_HELLO, ID_HELLO);
    EXPECT_IDS(t, " the", 0, ID_GTHE);
    EXPECT_IDS(t, "the", 0, BT('t'), ID_HE);
    EXPECT_IDS(t, "lll", 0, ID_LL, BT('l'));          /* equal ranks: the left pair first */
    EXPECT_IDS(t, "hell", 0, ID_HELL);
    EXPECT_IDS(t, "123", 0, ID_12, BT('3'));          /* gpt-2 keeps digit runs together */
    /* words: " the" | " hello" (no merge joins the space to "hello") */
    EXPECT_IDS(t, " the hello", 0, ID_GTHE, BT(' '), ID_HELLO);
    /* \s+(?!\S): of three spaces before a word, the last one joins the word */
    EXPECT_IDS(t, "   x", 0, ID_2SP, BT(' '), BT('x'));
    EXPECT_IDS(t, "x   ", 0, BT('x'), ID_2SP, BT(' '));
    int32_t out[8];
    CHECK(encode(t, "", out, 0) == 0);
    /* BOS on request; count-only calls; a short buffer gets the count needed */
    CHECK(ps_tokenizer_encode(t, "hello", 5, out, 8, 1, 0) == 2 && out[0] == 1 && out[1] == ID_HELLO);
    CHECK(ps_tokenizer_encode(t, "hellohello", 10, NULL, 0, 0, 0) == 2);
    CHECK(ps_tokenizer_encode(t, "hellohello", 10, out, 1, 0, 0) == 2);
    CHECK(ps_tokenizer_encode(t, "x", -1, out, 8, 0, 0) < 0);
    CHECK(ps_tokenizer_encode(t, NULL, 3, out, 8, 0, 0) < 0);
    CHECK(ps_tokenizer_encode(t, "x", 1, NULL, 8, 0, 0) < 0);
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

TEST(bpe_pretokenizers_and_specials) {
    ps_gguf *g;
    ps_tokenizer *t = load_bpe("smollm", &g);
    if (!t) { ps_gguf_close(g); return; }
    EXPECT_IDS(t, "123", 0, BT('1'), BT('2'), BT('3')); /* smollm: every digit alone */
    EXPECT_IDS(t, "<|im_start|>hello<|im_end|>", 1, 1, ID_HELLO, 2);
    int32_t out[256];
    int n = encode(t, "<|im_start|>hello<|im_end|>", out, 0); /* as plain text */
    CHECK(n > 3);
    for (int i = 0; i < n; i++) CHECK(out[i] != 1 && out[i] != 2);
    EXPECT_IDS(t, "a<|im_end|><|im_end|>b", 1, BT('a'), 2, 2, BT('b'));
    /* end of generation, end of turn, pieces */
    CHECK(ps_tokenizer_bos(t) == 1 && ps_tokenizer_eos(t) == 2);
    CHECK(ps_tokenizer_eot(t) == 2); /* <|im_end|> is preferred to <|endoftext|> */
    CHECK(ps_tokenizer_is_eog(t, 0) && ps_tokenizer_is_eog(t, 2) && !ps_tokenizer_is_eog(t, 1));
    CHECK(!ps_tokenizer_is_eog(t, -1) && !ps_tokenizer_is_eog(t, N_BPE));
    CHECK(ps_tokenizer_add_bos(t) == 0);
    char piece[32];
    CHECK(ps_tokenizer_piece(t, ID_GTHE, piece, sizeof piece, 0) == 4 && memcmp(piece, " the", 4) == 0);
    CHECK(ps_tokenizer_piece(t, BT(0xE4), piece, sizeof piece, 0) == 1 && (unsigned char)piece[0] == 0xE4);
    CHECK(ps_tokenizer_piece(t, 1, piece, sizeof piece, 0) == 0);
    CHECK(ps_tokenizer_piece(t, 1, piece, sizeof piece, 1) == 12 && memcmp(piece, "<|im_start|>", 12) == 0);
    CHECK(ps_tokenizer_piece(t, 1, piece, 3, 1) == 12);  /* truncated copy, full length */
    CHECK(ps_tokenizer_piece(t, 1, NULL, 0, 1) == 12);
    CHECK(ps_tokenizer_piece(t, N_BPE, piece, sizeof piece, 1) < 0);
    ps_tokenizer_free(t);
    ps_gguf_close(g);

    /* llama-bpe: case-folded contractions, digits in threes, and a word
     * that is a whole token skips the merges */
    t = load_bpe("llama-bpe", &g);
    if (!t) { ps_gguf_close(g); return; }
    CHECK(ps_tokenizer_add_bos(t) == 0); /* the file's add_bos_token=false wins */
    EXPECT_IDS(t, "12341", 0, ID_12, BT('3'), BT('4'), BT('1'));
    EXPECT_IDS(t, "IT'SOK", 0, BT('I'), BT('T'), BT('\''), BT('S'), BT('O'), BT('K'));
    EXPECT_IDS(t, "x\n\n y", 0, BT('x'), BT('\n'), BT('\n'), BT(' '), BT('y'));
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

/* Valid UTF-8 of random code points and ASCII: no surrogates, no U+2581
 * (SentencePiece reads it as a space), and 4-byte forms only up to U+3FFFF
 * (SmolLM2's vocabulary has no token for the lead bytes F1/F2). */
static size_t random_utf8(uint64_t *s, char *out, size_t max) {
    size_t n = 0;
    while (n + 4 < max) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(*s >> 33), cp;
        switch (r % 6) {
        case 0: cp = ' '; break;
        case 1: cp = 0x21 + r / 7 % 94; break;
        case 2: cp = "\n\t 0123456789"[r / 7 % 13]; break;
        case 3: cp = 0x80 + r / 7 % 0x780; break;
        case 4: cp = 0x800 + r / 7 % 0xF800; if ((cp >= 0xD800 && cp < 0xE000) || cp == 0x2581) cp = 0x4E00; break;
        default: cp = 0x10000 + r / 7 % 0x30000; break;
        }
        if (cp < 0x80) out[n++] = (char)cp;
        else if (cp < 0x800) { out[n++] = (char)(0xC0 | (cp >> 6)); out[n++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out[n++] = (char)(0xE0 | (cp >> 12)); out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (char)(0xF0 | (cp >> 18)); out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return n;
}

/* Tokenize random text; valid UTF-8 must come back byte for byte, and
 * random bytes must not crash. Returns the number of round-trip failures. */
static int fuzz(const ps_tokenizer *t, int rounds, int spm) {
    uint64_t s = 99;
    char text[600], back[8192];
    int32_t ids[1024];
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        size_t n = random_utf8(&s, text, sizeof text);
        int k = ps_tokenizer_encode(t, text, (int32_t)n, ids, 1024, 0, r & 1);
        if (k < 0 || k > 1024) { bad++; continue; }
        size_t m = 0;
        for (int i = 0; i < k; i++) {
            int p = ps_tokenizer_piece(t, ids[i], back + m, (int32_t)(sizeof back - m), 1);
            if (p < 0 || m + (size_t)p > sizeof back) { bad++; break; }
            m += (size_t)p;
        }
        size_t skip = spm && m > 0 && back[0] == ' ' ? 1 : 0; /* SentencePiece's prefixed space */
        if (m - skip != n || memcmp(back + skip, text, n) != 0) {
            if (bad++ < 2) {
                size_t d = 0;
                while (d < n && d + skip < m && back[d + skip] == text[d]) d++;
                fprintf(stderr, "  round trip differs at byte %zu of %zu (got %zu bytes):", d, n, m - skip);
                for (size_t q = d >= 4 ? d - 4 : 0; q < d + 8 && q < n; q++) fprintf(stderr, " %02x", (unsigned char)text[q]);
                fprintf(stderr, " | got");
                for (size_t q = d >= 4 ? d - 4 : 0; q < d + 8 && q + skip < m; q++) fprintf(stderr, " %02x", (unsigned char)back[q + skip]);
                fprintf(stderr, "\n");
            }
        }
        /* raw random bytes: anything may come out, but no crash */
        for (size_t i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            text[i] = (char)(s >> 56);
        }
        if (ps_tokenizer_encode(t, text, (int32_t)n, ids, 1024, 1, 1) < 0) bad++;
    }
    return bad;
}

TEST(bpe_round_trip_random_text) {
    ps_gguf *g;
    ps_tokenizer *t = load_bpe("smollm", &g);
    if (t) CHECK(fuzz(t, 300, 0) == 0);
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

/* One tokenizer shared by several threads gives each the same ids as a
 * single thread (encode keeps all its state on the caller's side). */
typedef struct { const ps_tokenizer *t; int seed, bad; uint64_t sum; } worker;

static void *tokenize_worker(void *arg) {
    worker *w = arg;
    uint64_t s = (uint64_t)w->seed;
    char text[400];
    int32_t a[512], b[512];
    for (int r = 0; r < 60; r++) {
        size_t n = random_utf8(&s, text, sizeof text);
        int na = ps_tokenizer_encode(w->t, text, (int32_t)n, a, 512, 0, 1);
        int nb = ps_tokenizer_encode(w->t, text, (int32_t)n, b, 512, 0, 1);
        if (na < 0 || na != nb || memcmp(a, b, (size_t)na * sizeof *a) != 0) w->bad++;
        for (int i = 0; i < na && i < 512; i++) w->sum = w->sum * 1000003u + (uint64_t)a[i]; /* all ids, in order */
    }
    return NULL;
}

TEST(shared_between_threads) {
    ps_gguf *g;
    ps_tokenizer *t = load_bpe("smollm", &g);
    if (!t) { ps_gguf_close(g); return; }
    /* reference ids, one thread at a time */
    worker ref[2] = {{t, 7, 0, 0}, {t, 8, 0, 0}};
    tokenize_worker(&ref[0]);
    tokenize_worker(&ref[1]);
    CHECK(ref[0].bad == 0 && ref[1].bad == 0 && ref[0].sum != ref[1].sum);
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){t, 7 + (i % 2), 0, 0}; /* two threads on each text stream */
        pthread_create(&th[i], NULL, tokenize_worker, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].bad == 0);
        CHECK(w[i].sum == ref[i % 2].sum);
    }
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

/* ---- a SentencePiece-style vocabulary ------------------------------------------- */

#define SP "\xe2\x96\x81" /* U+2581 */
enum { S_UNK, S_BOS, S_EOS, S_BYTE0, S_SP = S_BYTE0 + 256, S_SPH, S_EL, S_LO, S_SPHEL, S_SPHELLO, S_LL, N_SPM };

static buf spm_vocab(int add_space_prefix) {
    static const char *tokens[N_SPM];
    static char bytes[256][7];
    static int32_t types[N_SPM];
    static float scores[N_SPM];
    tokens[S_UNK] = "<unk>"; types[S_UNK] = 2;
    tokens[S_BOS] = "<s>"; types[S_BOS] = 3;
    tokens[S_EOS] = "</s>"; types[S_EOS] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[S_BYTE0 + b] = bytes[b];
        types[S_BYTE0 + b] = 6;
    }
    const char *pieces[] = {SP, SP "h", "el", "lo", SP "hel", SP "hello", "ll"};
    /* "el" beats "ll" beats "lo": in "hello", e-l is merged before l-l */
    const float sc[] = {-1.0f, -2.0f, -3.0f, -5.0f, -6.0f, -7.0f, -4.0f};
    for (int i = 0; i < 7; i++) {
        tokens[S_SP + i] = pieces[i];
        types[S_SP + i] = 1;
        scores[S_SP + i] = sc[i];
    }
    buf b = {0};
    header(&b, 7);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", tokens, N_SPM);
    kv_f32s(&b, "tokenizer.ggml.scores", scores, N_SPM);
    kv_i32s(&b, "tokenizer.ggml.token_type", types, N_SPM);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", S_BOS);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", S_EOS);
    kv_bool(&b, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    return b;
}

TEST(spm_scores_prefix_and_bytes) {
    ps_gguf *g;
    buf b = spm_vocab(1);
    ps_tokenizer *t = load(&b, &g);
    CHECK(t != NULL);
    if (!t) { fprintf(stderr, "%s\n", ps_last_error()); ps_gguf_close(g); return; }
    CHECK(ps_tokenizer_add_bos(t) == 1 && ps_tokenizer_bos(t) == S_BOS && ps_tokenizer_is_eog(t, S_EOS));
    /* "▁hello": ▁h (-2), el (-3); l-l is then stale (its l was taken), lo (-5),
     * ▁h+el (-6), ▁hel+lo (-7) */
    EXPECT_IDS(t, "hello", 0, S_SPHELLO);
    EXPECT_IDS(t, "hell", 0, S_SPHEL, S_BYTE0 + 'l');
    EXPECT_IDS(t, "hi", 0, S_SPH, S_BYTE0 + 'i');
    EXPECT_IDS(t, "h h", 0, S_SPH, S_SPH);
    EXPECT_IDS(t, "\xc3\xa9", 0, S_SP, S_BYTE0 + 0xC3, S_BYTE0 + 0xA9); /* é: byte fallback */
    EXPECT_IDS(t, "<s>x", 1, S_BOS, S_SP, S_BYTE0 + 'x');              /* a space after a special */
    int32_t out[8];
    CHECK(ps_tokenizer_encode(t, "h", 1, out, 8, 1, 0) == 2 && out[0] == S_BOS && out[1] == S_SPH);
    char piece[16];
    CHECK(ps_tokenizer_piece(t, S_SPHEL, piece, sizeof piece, 0) == 4 && memcmp(piece, " hel", 4) == 0);
    CHECK(ps_tokenizer_piece(t, S_BYTE0 + 0xC3, piece, sizeof piece, 0) == 1 && (unsigned char)piece[0] == 0xC3);
    CHECK(ps_tokenizer_piece(t, S_BOS, piece, sizeof piece, 0) == 0);
    CHECK(fuzz(t, 200, 1) == 0);
    ps_tokenizer_free(t);
    ps_gguf_close(g);

    b = spm_vocab(0); /* no prefixed space */
    t = load(&b, &g);
    CHECK(t != NULL);
    if (t) EXPECT_IDS(t, "h hel", 0, S_BYTE0 + 'h', S_SPHEL);
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

/* ---- broken vocabularies ---------------------------------------------------------- */

static int load_fails(buf *b, const char *needle) {
    ps_gguf *g;
    ps_clear_error();
    ps_tokenizer *t = load(b, &g);
    int ok = g && !t && strstr(ps_last_error(), needle);
    if (!ok) fprintf(stderr, "expected '%s', got t=%p err='%s'\n", needle, (void *)t, ps_last_error());
    ps_tokenizer_free(t);
    ps_gguf_close(g);
    return ok;
}

TEST(bad_vocabularies) {
    buf b = {0};
    header(&b, 1);
    kv_u32(&b, "general.alignment", 32);
    CHECK(load_fails(&b, "tokenizer.ggml.model is missing"));

    header(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "bert");
    kv_strs(&b, "tokenizer.ggml.tokens", (const char *const[]){"a"}, 1);
    CHECK(load_fails(&b, "tokenizer model 'bert' is not supported"));

    b = bpe_vocab("deepseek-coder", 1);
    CHECK(load_fails(&b, "pre-tokenizer 'deepseek-coder' is not supported"));
    b = bpe_vocab("gpt-2", 0);
    CHECK(load_fails(&b, "tokenizer.ggml.merges is missing"));

    header(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", (const char *const[]){"a", "b", "a"}, 3);
    CHECK(load_fails(&b, "duplicate token"));

    header(&b, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", (const char *const[]){"a", "b", "c"}, 3);
    kv_f32s(&b, "tokenizer.ggml.scores", (const float[]){0.0f, 1.0f}, 2);
    CHECK(load_fails(&b, "tokenizer.ggml.scores"));

    header(&b, 2);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_u32(&b, "tokenizer.ggml.tokens", 5);
    CHECK(load_fails(&b, "tokenizer.ggml.tokens is missing or not a string array"));

    header(&b, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", (const char *const[]){"a", "b"}, 2);
    kv_str(&b, "tokenizer.ggml.bos_token_id", "1");
    CHECK(load_fails(&b, "bos_token_id"));

    /* out-of-range special ids are ignored, as llama.cpp does */
    header(&b, 3);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", (const char *const[]){"a", "b"}, 2);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 99);
    ps_gguf *g;
    ps_tokenizer *t = load(&b, &g);
    CHECK(t && ps_tokenizer_eos(t) == -1 && ps_tokenizer_bos(t) == 1);
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

/* ---- the real SmolLM2 vocabulary, when present -------------------------------------- */

TEST(smollm2_random_text) {
    const char *path = getenv("PROSPARSE_SMOLLM2");
    if (!path || access(path, R_OK) != 0) {
        printf("  (skipped: PROSPARSE_SMOLLM2 not set or missing)\n");
        return;
    }
    ps_gguf *g = ps_gguf_open(path);
    CHECK(g != NULL);
    if (!g) return;
    ps_tokenizer *t = ps_tokenizer_load(g);
    CHECK(t != NULL);
    if (t) {
        CHECK(ps_tokenizer_n_vocab(t) == 49152);
        EXPECT_IDS(t, "<|im_start|>user<|im_end|>", 1, 1, 4093, 2);
        CHECK(fuzz(t, 200, 0) == 0);
    }
    ps_tokenizer_free(t);
    ps_gguf_close(g);
}

int main(void) {
    if (make_test_dir(tmpdir, sizeof tmpdir, "ps_tok")) return 1;
    RUN(bpe_merges_by_rank);
    RUN(bpe_pretokenizers_and_specials);
    RUN(bpe_round_trip_random_text);
    RUN(shared_between_threads);
    RUN(spm_scores_prefix_and_bytes);
    RUN(bad_vocabularies);
    RUN(smollm2_random_text);
    rmdir(tmpdir);
    return CHECK_DONE();
}
