/* pretokenize.c: UTF-8 helpers and the pre-tokenizers of byte-level BPE.
 *
 * llama.cpp splits text into words with a chain of regexes per
 * pre-tokenizer before BPE; the few regexes the supported vocabularies use
 * are matched here by hand over code points with Unicode class flags from
 * the generated unicode_tables.h (no regex library).
 */
#include "pretokenize.h"
#include "unicode_tables.h"
#include "util.h"

#include <stdlib.h>

int ps_ivec_push(ps_ivec *a, int32_t x) {
    PS_RESERVE_ONE(a, 64);
    a->v[a->n++] = x;
    return 0;
}

/* ---- UTF-8 and Unicode classes -------------------------------------------------- */

/* Byte length of a UTF-8 sequence from its lead byte (no validation). */
int ps_utf8_len(unsigned char c) {
    static const int len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

int ps_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one code point at s[*i] the way llama.cpp does: a malformed
 * sequence consumes one byte and yields U+FFFD (overlong forms are
 * accepted and later re-encoded canonically). */
uint32_t ps_utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned char c = s[*i];
    int len = c < 0x80 ? 1 : (c & 0x40) == 0 ? 0 : (c & 0x20) == 0 ? 2 : (c & 0x10) == 0 ? 3 : (c & 0x08) == 0 ? 4 : 0;
    if (len == 1) { (*i)++; return c; }
    if (len == 0 || *i + (size_t)len > n) { (*i)++; return 0xFFFD; }
    for (int k = 1; k < len; k++)
        if ((s[*i + k] & 0xC0) != 0x80) { (*i)++; return 0xFFFD; }
    uint32_t cp = c & (0x7F >> len);
    for (int k = 1; k < len; k++) cp = (cp << 6) | (s[*i + k] & 0x3F);
    if (cp > 0x10FFFF) { (*i)++; return 0xFFFD; } /* llama.cpp cannot re-encode these either */
    *i += (size_t)len;
    return cp;
}

/* PS_UC_* flags of a code point, plus IN_RANGE so "any character" tests can
 * tell a real character from the end of a word. */
#define UC_IN_RANGE 16
static uint8_t uc_flags(uint32_t cp) {
    if (cp < 128) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return PS_UC_LETTER;
        if (cp >= '0' && cp <= '9') return PS_UC_NUMBER;
        if ((cp >= 9 && cp <= 13) || cp == ' ') return PS_UC_SPACE;
    }
    size_t lo = 0, hi = PS_UC_N_RANGES;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ps_uc_ranges[mid].last < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < PS_UC_N_RANGES && ps_uc_ranges[lo].first <= cp ? ps_uc_ranges[lo].flags : 0;
}

/* GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes for U+0100.. in byte order. */
uint32_t ps_byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    if (b <= 0x20) return 256u + (uint32_t)b;              /* 0x00..0x20 -> U+0100..U+0120 */
    if (b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F); /* 0x7F..0xA0 -> U+0121..U+0142 */
    return 256u + 33u + 34u;                                /* 0xAD -> U+0143 */
}

/* ---- pre-tokenizers ------------------------------------------------------------- *
 * A word list is an ivec of word lengths in code points. Each stage refines
 * every word of its input independently (a match never crosses a word
 * boundary), exactly as llama.cpp chains its regexes. cp/fl are the code
 * points and their flags; positions past the word's end read as "nothing". */

typedef struct {
    const uint32_t *cp;
    const uint8_t *fl;   /* uc_flags | UC_IN_RANGE */
    int32_t a, e;        /* current word [a, e) */
    int32_t prev;        /* end of the last emitted piece */
    ps_ivec *out;
} splitter;

#define NOCP 0xFFFFFFFFu
static uint32_t S_CP(const splitter *s, int32_t i) { return i < s->e ? s->cp[i] : NOCP; }
static uint8_t S_FL(const splitter *s, int32_t i) { return i < s->e ? s->fl[i] : 0; }
static int emit(splitter *s, int32_t end) {
    int32_t len = end - s->prev;
    s->prev = end;
    return len > 0 ? ps_ivec_push(s->out, len) : 0;
}
#define L_ PS_UC_LETTER
#define N_ PS_UC_NUMBER
#define W_ PS_UC_SPACE

/* 's|'t|'re|'ve|'m|'ll|'d (case-folded when fold): length matched, 0 if none. */
static int contraction(const splitter *s, int32_t pos, int fold) {
    if (S_CP(s, pos) != '\'' || pos + 1 >= s->e) return 0;
    uint32_t c1 = S_CP(s, pos + 1), c2 = pos + 2 < s->e ? S_CP(s, pos + 2) : NOCP;
    if (fold) {
        if (c1 >= 'A' && c1 <= 'Z') c1 += 32;
        if (c2 >= 'A' && c2 <= 'Z') c2 += 32;
    }
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
    return 0;
}

/* Whitespace tail shared by both regexes: \s+(?!\S) | \s+ */
static int split_spaces(splitter *s, int32_t *pos) {
    int32_t n = 0;
    while (S_FL(s, *pos + n) & W_) n++;
    if (n > 1 && *pos + n < s->e) *pos += n - 1; /* leave the last space to the next word */
    else if (n > 0) *pos += n;
    else (*pos)++;                                /* no rule matched: one code point */
    return emit(s, *pos);
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static int split_gpt2(splitter *s) {
    for (int32_t pos = s->a; pos < s->e;) {
        int k = contraction(s, pos, 0);
        if (k) { pos += k; if (emit(s, pos)) return -1; continue; }
        uint32_t c = S_CP(s, pos);
        uint8_t f = c == ' ' ? S_FL(s, pos + 1) : S_FL(s, pos);
        if (f & (L_ | N_)) {
            uint8_t cls = (f & L_) ? L_ : N_;
            pos += c == ' ';
            while (S_FL(s, pos) & cls) pos++;
            if (emit(s, pos)) return -1;
            continue;
        }
        if (!(f & (W_ | L_ | N_)) && (f & UC_IN_RANGE)) {
            pos += c == ' ';
            while (!(S_FL(s, pos) & (W_ | L_ | N_)) && (S_FL(s, pos) & UC_IN_RANGE)) pos++;
            if (emit(s, pos)) return -1;
            continue;
        }
        if (split_spaces(s, &pos)) return -1;
    }
    return 0;
}

/* LLaMA-3 (max_digits 3; Qwen2 the same with 1):
 *          (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static int split_llama3(splitter *s, int max_digits) {
    for (int32_t pos = s->a; pos < s->e;) {
        int k = contraction(s, pos, 1);
        if (k) { pos += k; if (emit(s, pos)) return -1; continue; }
        uint32_t c = S_CP(s, pos);
        uint8_t f = S_FL(s, pos);
        if (!(c == '\r' || c == '\n' || (f & N_)) && ((f & L_) || (S_FL(s, pos + 1) & L_))) {
            pos++;
            while (S_FL(s, pos) & L_) pos++;
            if (emit(s, pos)) return -1;
            continue;
        }
        if (f & N_) { /* digits in groups of max_digits */
            int32_t ini = pos;
            while (S_FL(s, pos) & N_) {
                if (++pos - ini >= max_digits) {
                    if (emit(s, pos)) return -1;
                    ini = pos;
                }
            }
            if (emit(s, pos)) return -1;
            continue;
        }
        uint8_t f2 = c == ' ' ? S_FL(s, pos + 1) : f;
        if (!(f2 & (W_ | L_ | N_)) && (f & UC_IN_RANGE)) {
            pos += c == ' ';
            while (!(S_FL(s, pos) & (W_ | L_ | N_)) && (S_FL(s, pos) & UC_IN_RANGE)) pos++;
            while (S_CP(s, pos) == '\r' || S_CP(s, pos) == '\n') pos++;
            if (emit(s, pos)) return -1;
            continue;
        }
        int32_t n = 0, last_nl = -1;
        while (S_FL(s, pos + n) & W_) {
            uint32_t c2 = S_CP(s, pos + n);
            if (c2 == '\r' || c2 == '\n') last_nl = pos + n + 1;
            n++;
        }
        if (last_nl >= 0) { /* \s*[\r\n]+ */
            pos = last_nl;
            if (emit(s, pos)) return -1;
            continue;
        }
        if (split_spaces(s, &pos)) return -1;
    }
    return 0;
}

/* Runs (or single code points when single) of code points where is(i) holds
 * become words; the gaps between them stay words too. */
static int split_class(splitter *s, int (*is)(const splitter *, int32_t), int single) {
    for (int32_t pos = s->a; pos < s->e;) {
        if (!is(s, pos)) { pos++; continue; }
        if (emit(s, pos)) return -1;
        pos++;
        if (!single)
            while (pos < s->e && is(s, pos)) pos++;
        if (emit(s, pos)) return -1;
    }
    return emit(s, s->e);
}

static int is_number(const splitter *s, int32_t i) { return (s->fl[i] & N_) != 0; }

/* [\p{P}\$\+<=>\^~\|] as llama.cpp evaluates it (ASCII punctuation but '`') */
static int is_default_punct(const splitter *s, int32_t i) {
    uint32_t c = s->cp[i];
    if (c < 128) return c != '`' && ((c >= '!' && c <= '/') || (c >= ':' && c <= '@') ||
                                     (c >= '[' && c <= '_') || (c >= '{' && c <= '~'));
    return (s->fl[i] & PS_UC_PUNCT) && !(s->fl[i] & W_);
}

/* [0-9][0-9][0-9]: leftmost non-overlapping triples of ASCII digits */
static int split_digit_triples(splitter *s) {
    for (int32_t pos = s->a; pos + 3 <= s->e;) {
        int ok = 1;
        for (int k = 0; k < 3; k++) ok &= s->cp[pos + k] >= '0' && s->cp[pos + k] <= '9';
        if (!ok) { pos++; continue; }
        if (emit(s, pos) || emit(s, pos + 3)) return -1;
        pos += 3;
    }
    return emit(s, s->e);
}

enum { ST_GPT2, ST_LLAMA3, ST_QWEN2, ST_EACH_NUMBER, ST_NUMBER_RUNS, ST_PUNCT_RUNS, ST_DIGIT_TRIPLES };

static int run_stage(int stage, const uint32_t *cp, const uint8_t *fl, const ps_ivec *in, ps_ivec *out) {
    splitter s = {cp, fl, 0, 0, 0, out};
    out->n = 0;
    int32_t a = 0;
    for (size_t w = 0; w < in->n; w++) {
        s.a = s.prev = a;
        s.e = a + in->v[w];
        int rc;
        switch (stage) {
        case ST_GPT2: rc = split_gpt2(&s); break;
        case ST_LLAMA3: rc = split_llama3(&s, 3); break;
        case ST_QWEN2: rc = split_llama3(&s, 1); break;
        case ST_EACH_NUMBER: rc = split_class(&s, is_number, 1); break;
        case ST_NUMBER_RUNS: rc = split_class(&s, is_number, 0); break;
        case ST_PUNCT_RUNS: rc = split_class(&s, is_default_punct, 0); break;
        default: rc = split_digit_triples(&s); break;
        }
        if (rc) return -1;
        a = s.e;
    }
    return 0;
}

/* The stage chain of each pre-tokenizer (llama.cpp's regex_exprs). */
static const int *pre_stages(int pre, int *n) {
    static const int gpt2[] = {ST_GPT2};
    static const int smollm[] = {ST_EACH_NUMBER, ST_GPT2};
    static const int llama3[] = {ST_LLAMA3};
    static const int qwen2[] = {ST_QWEN2};
    static const int dflt[] = {ST_PUNCT_RUNS, ST_GPT2, ST_NUMBER_RUNS, ST_DIGIT_TRIPLES};
    switch (pre) {
    case PS_PRE_GPT2: *n = 1; return gpt2;
    case PS_PRE_SMOLLM: *n = 2; return smollm;
    case PS_PRE_LLAMA3: *n = 1; return llama3;
    case PS_PRE_QWEN2: *n = 1; return qwen2;
    default: *n = 4; return dflt;
    }
}

/* Split n code points into words (ps_pretokenize in pretokenize.h). */
int ps_pretokenize(int pre, const uint32_t *cp, uint8_t *fl, size_t n, ps_ivec *words, ps_ivec *tmp) {
    words->n = 0;
    if (n == 0) return 0;
    if (n > (size_t)INT32_MAX) return -1;
    for (size_t i = 0; i < n; i++) fl[i] = uc_flags(cp[i]) | UC_IN_RANGE;
    if (ps_ivec_push(words, (int32_t)n)) return -1;
    int n_st;
    const int *st = pre_stages(pre, &n_st);
    for (int k = 0; k < n_st; k++) {
        if (run_stage(st[k], cp, fl, words, tmp)) return -1;
        ps_ivec t = *words;
        *words = *tmp;
        *tmp = t;
    }
    return 0;
}
