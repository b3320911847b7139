/* tokenizer.h: text <-> token ids from the GGUF vocabulary (not public).
 * tokenizer.ggml.model "gpt2" (byte-level BPE; pre-tokenizers "smollm",
 * "llama-bpe", "gpt2", "default") and "llama" (SentencePiece-style BPE over
 * scores, with byte fallback). */
#ifndef PS_TOKENIZER_H
#define PS_TOKENIZER_H

#include <stdint.h>
#include "gguf.h"

typedef struct ps_tokenizer ps_tokenizer;

/* Build from tokenizer.ggml.* keys. The tokenizer copies what it needs
 * (it may outlive nothing: the model keeps the gguf open anyway).
 * NULL on error (error set). */
ps_tokenizer *ps_tokenizer_load(const ps_gguf *g);
void ps_tokenizer_free(ps_tokenizer *t);

int32_t ps_tokenizer_n_vocab(const ps_tokenizer *t);
int32_t ps_tokenizer_bos(const ps_tokenizer *t);
int32_t ps_tokenizer_eos(const ps_tokenizer *t);
int32_t ps_tokenizer_eot(const ps_tokenizer *t);
int ps_tokenizer_is_eog(const ps_tokenizer *t, int32_t id);
int ps_tokenizer_add_bos(const ps_tokenizer *t);

/* Same contracts as ps_tokenize / ps_token_to_piece in prosparse.h. */
int ps_tokenizer_encode(const ps_tokenizer *t, const char *text, int32_t len,
                        int32_t *out, int32_t max_tokens, int add_bos, int parse_special);
int ps_tokenizer_piece(const ps_tokenizer *t, int32_t id, char *buf, int32_t buflen, int special);

#endif
