/* pretokenize.h: UTF-8 helpers and the word splitting done before byte-level
 * BPE (internal to the tokenizer, not public). */
#ifndef PS_PRETOKENIZE_H
#define PS_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* A growable int32 array. */
typedef struct { int32_t *v; size_t n, cap; } ps_ivec;
int ps_ivec_push(ps_ivec *a, int32_t x); /* 0, or -1 when out of memory */

/* Byte length of a UTF-8 sequence from its lead byte (no validation). */
int ps_utf8_len(unsigned char lead);
/* Encode cp (<= 0x10FFFF) into out (4 bytes room); returns the length. */
int ps_utf8_put(uint32_t cp, char *out);
/* Decode the code point at s[*i] (i < n) and advance *i, as llama.cpp does:
 * a malformed sequence consumes one byte and yields U+FFFD. */
uint32_t ps_utf8_next(const unsigned char *s, size_t n, size_t *i);
/* GPT-2's byte-level alphabet: the code point standing for byte b. */
uint32_t ps_byte_to_cp(int b);

/* Pre-tokenizers (tokenizer.ggml.pre). */
enum ps_pre {
    PS_PRE_DEFAULT = 0, /* "default": punctuation runs, GPT-2 regex, digit runs, digit triples */
    PS_PRE_GPT2,        /* "gpt-2": the GPT-2 regex */
    PS_PRE_SMOLLM,      /* "smollm": every digit alone, then the GPT-2 regex */
    PS_PRE_LLAMA3,      /* "llama-bpe": the LLaMA-3 regex */
    PS_PRE_QWEN2,       /* "qwen2": the LLaMA-3 regex with single digits */
};

/* Split the n code points cp into words for pre-tokenizer pre. words gets
 * each word's length in code points, in order; fl (n bytes) and tmp are
 * scratch. Returns 0, or -1 when out of memory. */
int ps_pretokenize(int pre, const uint32_t *cp, uint8_t *fl, size_t n, ps_ivec *words, ps_ivec *tmp);

#endif
