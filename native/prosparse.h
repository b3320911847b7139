/* prosparse.h: the public C API of the prosparse-cpu engine.
 *
 * The only header the Python binding reads. Conventions (as llama.h):
 *  - opaque handles; constructors return NULL on failure, each has a *_free;
 *  - functions returning int give PS_OK (0) on success and a negative PS_ERR_*
 *    on failure; ps_last_error() then holds one line of text saying why;
 *  - the library never prints, never exits, never aborts on bad input.
 *
 * A model (weights, vocabulary, hyper-parameters) is read-only once loaded
 * and may be shared by several sessions. A session owns a KV cache, scratch
 * buffers, a thread pool and per-layer counters; one thread uses it at a time.
 */
#ifndef PROSPARSE_H
#define PROSPARSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PS_API __attribute__((visibility("default")))
#else
#define PS_API
#endif

/* ---- status codes ---------------------------------------------------- */
enum {
    PS_OK = 0,
    PS_ERR_IO = -1,        /* cannot open / map / read the file */
    PS_ERR_FORMAT = -2,    /* malformed or inconsistent file contents */
    PS_ERR_UNSUPPORTED = -3, /* valid file, but an architecture/type we do not run */
    PS_ERR_ARG = -4,       /* bad argument from the caller */
    PS_ERR_MEMORY = -5,    /* allocation failed */
    PS_ERR_CONTEXT = -6,   /* KV cache full (n_past + n > n_ctx) */
};

/* One line describing the last error on this thread ("" if none). */
PS_API const char *ps_last_error(void);
/* The PS_ERR_* code of that error (PS_OK if none): lets callers of functions
 * that return NULL tell an unsupported file from a malformed one. */
PS_API int ps_last_error_code(void);

/* ---- engine modes (DESIGN.md contract names) ------------------------- */
enum ps_mode {
    PS_MODE_DENSE = 0,     /* everything computed; the reference */
    PS_MODE_SPARSE = 1,    /* exact: skip up/down rows of neurons with act(gate)==0 */
    PS_MODE_PREDICT = 2,   /* predictor picks candidate neurons (approximate) */
    PS_MODE_THRESHOLD = 3, /* training-free cut-offs on |act(gate)| (SiLU models) */
};

/* ---- SIMD dispatch ---------------------------------------------------- */
/* x86: AVX2 (with FMA, F16C), AVX512 (F, BW, VL and VNNI), which gives the
 * same results as AVX2 (same float steps, exact integer sums). aarch64: NEON,
 * NEON_DOT (with the dot-product extension), both bit-identical to scalar
 * except in exp (SwiGLU, softmax). Each level of an architecture includes
 * the ones below it there; the other architecture's levels never run. */
enum { PS_SIMD_SCALAR = 0, PS_SIMD_AVX2 = 1, PS_SIMD_AVX512 = 2, PS_SIMD_NEON = 3, PS_SIMD_NEON_DOT = 4,
       PS_SIMD_COUNT = 5 };
/* Best level this CPU supports (cpuid on x86, the OS's hwcaps on aarch64). */
PS_API int ps_simd_supported(void);
/* Select the kernel level used from now on, process-wide (tests force
 * PS_SIMD_SCALAR to compare against the reference): the highest level this
 * CPU runs that is not above the one asked for (so scalar for another
 * architecture's level). Returns the level now in force. */
PS_API int ps_simd_set(int level);
/* The level in force. */
PS_API int ps_simd_get(void);

/* ---- model ------------------------------------------------------------ */
typedef struct ps_model ps_model;

/* Map and validate a GGUF file (architectures "llama" and "prosparse", and
 * PowerInfer's "PWRI" files of architecture "llama" or "bamboo"),
 * then copy the weight matrices into memory laid out for the kernels in
 * force (row-interleaved where they have a packed product; huge pages where
 * the OS allows; the mapping itself when there is no memory for copies).
 * Select the SIMD level before loading. NULL on error (see ps_last_error). */
PS_API ps_model *ps_model_load(const char *path);
/* ps_model_load with flags: PS_LOAD_MAP_ONLY runs from the file's mapping,
 * without copies (memory the page cache can reclaim; slower decode). The
 * results are the same either way. */
enum { PS_LOAD_MAP_ONLY = 1 };
PS_API ps_model *ps_model_load_ex(const char *path, uint32_t flags);
PS_API void ps_model_free(ps_model *model);

typedef struct ps_model_info {
    char arch[32];          /* "llama" or "prosparse"; PowerInfer files: "llama" or "bamboo" */
    char activation[16];    /* "silu", "relu", "fatrelu", "relu2", "drelu" */
    float activation_threshold;
    int32_t n_vocab, n_ctx_train, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim;
    float rope_freq_base, rms_eps;
    int32_t tied_output;     /* 1: token_embd reused as output */
    int32_t has_predictor;   /* 1: blk.N.ffn_pred_in/out present */
    int32_t predictor_rank;
    int32_t weight_type;     /* ggml type id of blk.0.ffn_gate (the bulk type) */
    int64_t n_params;
    int64_t file_size;
    int32_t powerinfer;      /* 1: a PowerInfer file (magic PWRI), read as it is */
    float predictor_threshold; /* logit cut of the predictor (0 without one) */
} ps_model_info;

PS_API int ps_model_get_info(const ps_model *model, ps_model_info *out);

/* String metadata by key (e.g. "tokenizer.chat_template"), copied into buf
 * with a NUL. Returns the full length (may exceed buflen-1: truncated), or
 * a negative error if the key is missing or not a string. */
PS_API int ps_model_meta_str(const ps_model *model, const char *key, char *buf, size_t buflen);

/* PS_OK if this model can run in `mode` (enum ps_mode); otherwise the error
 * ps_session_set_mode would return, with ps_last_error() saying why (sparse
 * on a SiLU model, predict without predictor tensors, threshold without
 * cut-offs, an unknown mode). */
PS_API int ps_model_check_mode(const ps_model *model, int32_t mode);

/* ---- tokenizer -------------------------------------------------------- */
/* Special token ids, -1 when the file has none. */
PS_API int32_t ps_token_bos(const ps_model *model);
PS_API int32_t ps_token_eos(const ps_model *model);
PS_API int32_t ps_token_eot(const ps_model *model); /* end of turn, e.g. <|im_end|>; may equal eos */
/* 1 if generation should stop at this token (eos, eot, other end-of-generation tokens). */
PS_API int ps_token_is_eog(const ps_model *model, int32_t token);
/* Whether the file asks for a BOS token at the start (tokenizer.ggml.add_bos_token). */
PS_API int ps_model_add_bos(const ps_model *model);

/* Tokenize len bytes of UTF-8 text into out (capacity max_tokens).
 * add_bos: prepend BOS (if the model has one). parse_special: text like
 * "<|im_start|>" becomes its special token instead of being split.
 * Returns the number of tokens; if it exceeds max_tokens nothing useful is
 * written and the return value is the count needed. Negative on error. */
PS_API int ps_tokenize(const ps_model *model, const char *text, int32_t len,
                       int32_t *out, int32_t max_tokens, int add_bos, int parse_special);

/* The raw bytes a token stands for (byte-level/SentencePiece decoding
 * applied; may be part of a UTF-8 sequence). special: 1 renders control
 * tokens as their text, 0 renders them as nothing. Returns the byte count
 * (may exceed buflen: truncated), negative on error. No NUL is added. */
PS_API int ps_token_to_piece(const ps_model *model, int32_t token, char *buf, int32_t buflen, int special);

/* ---- session ---------------------------------------------------------- */
typedef struct ps_session ps_session;

typedef struct ps_session_params {
    int32_t n_threads;   /* worker threads incl. the caller; <=0: number of cores */
    int32_t n_ctx;       /* KV cache length in tokens; <=0: min(model n_ctx_train, 4096) */
    int32_t n_batch;     /* max tokens per forward pass in prompt processing; <=0: 512 */
    int32_t mode;        /* enum ps_mode */
    int32_t cache_type;  /* enum ps_cache_type: how the KV cache stores each value */
    /* > 0: run a relu or fatrelu model as FATReLU with this threshold t
     * (act(g) = g where g >= t, else 0) in every mode; 0: the file's own
     * activation. Other activations, negative or non-finite values: PS_ERR_ARG. */
    float activation_threshold;
} ps_session_params;

/* KV cache element types. F16 (the default) halves F32's bytes; Q8_0 (blocks
 * of 32, head_dim a multiple of 32) is ~53% of F16; F32 is exact. */
enum ps_cache_type { PS_CACHE_F16 = 0, PS_CACHE_F32 = 1, PS_CACHE_Q8_0 = 2 };

PS_API ps_session_params ps_session_default_params(void);
PS_API ps_session *ps_session_new(const ps_model *model, const ps_session_params *params);
PS_API void ps_session_free(ps_session *session);

/* Run n tokens through the model, appending them to the KV cache.
 * Long inputs are split into batches of n_batch internally.
 * If all_logits is non-NULL it receives n * n_vocab floats, the logits at
 * every position (teacher forcing, perplexity); otherwise only the last
 * position's logits are computed, readable by ps_session_logits. */
PS_API int ps_session_eval(ps_session *session, const int32_t *tokens, int32_t n, float *all_logits);
/* Logits of the last evaluated position (n_vocab floats), NULL before any eval. */
PS_API const float *ps_session_logits(const ps_session *session);
PS_API int32_t ps_session_n_past(const ps_session *session);
/* KV cache length in tokens, after the defaults of ps_session_params. */
PS_API int32_t ps_session_n_ctx(const ps_session *session);
/* Bytes allocated for the KV cache (K and V of every layer, n_ctx positions). */
PS_API int64_t ps_session_kv_bytes(const ps_session *session);
/* Empty the KV cache and the counters. */
PS_API void ps_session_reset(ps_session *session);
/* Drop the KV cache past position n_keep (0 <= n_keep <= n_past). */
PS_API int ps_session_truncate(ps_session *session, int32_t n_keep);
PS_API int ps_session_set_mode(ps_session *session, int32_t mode);
PS_API int32_t ps_session_get_mode(const ps_session *session);

/* ---- counters --------------------------------------------------------- */
typedef struct ps_layer_stats {
    int64_t tokens;          /* tokens that went through this layer's FFN */
    int64_t neurons_total;   /* tokens * n_ff */
    int64_t neurons_active;  /* neurons whose activation was non-zero (measured) */
    int64_t neurons_predicted; /* neurons the predictor (or threshold) kept */
    int64_t recall_hits;     /* truly active neurons that were predicted (measure option) */
    int64_t recall_total;    /* truly active neurons, when measured */
} ps_layer_stats;

/* Measure option (predict mode): also compute the dense gate of every layer
 * to count recall_hits / recall_total (slower; off by default). on: 1 or 0.
 * Kept across set_mode and reset. */
PS_API int ps_session_set_measure(ps_session *session, int on);

/* Copy up to max_layers per-layer counters into out; returns n_layer. */
PS_API int ps_session_layer_stats(const ps_session *session, ps_layer_stats *out, int32_t max_layers);

/* ---- sampler ---------------------------------------------------------- */
typedef struct ps_sampler ps_sampler;

typedef struct ps_sampler_params {
    float temperature;   /* <= 0: greedy */
    int32_t top_k;       /* <= 0: off */
    float top_p;         /* >= 1: off */
    uint64_t seed;
} ps_sampler_params;

PS_API ps_sampler_params ps_sampler_default_params(void);
PS_API ps_sampler *ps_sampler_new(const ps_sampler_params *params);
PS_API void ps_sampler_free(ps_sampler *sampler);
/* Pick a token from n_vocab logits (not modified). */
PS_API int32_t ps_sampler_sample(ps_sampler *sampler, const float *logits, int32_t n_vocab);

/* ---- testing hooks ------------------------------------------------------ */
/* Direct access to the kernels so tests can compare them with gguf-py/numpy.
 * W: n_rows rows of n_cols elements in ggml type `type` (ggml block layout).
 * All use the SIMD level in force (ps_simd_set). PS_OK or a negative error. */
/* dst[0..n) = dequantized src (one row of n elements). */
PS_API int ps_debug_dequantize(int32_t type, const void *src, int64_t n, float *dst);
/* Y (n_tok x n_rows) = X (n_tok x n_cols) W^T, through ps_matmul. */
PS_API int ps_debug_matmul(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
                           const float *X, int32_t n_tok, float *Y, int32_t n_threads);
/* The same product through the row-interleaved copy of W (Q4_0, Q4_1, Q8_0;
 * PS_ERR_UNSUPPORTED otherwise): it equals ps_debug_matmul bit for bit at
 * every SIMD level (levels without a packed kernel read W itself). */
PS_API int ps_debug_matmul_packed(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
                                  const float *X, int32_t n_tok, float *Y, int32_t n_threads);
/* Y_t (n_tok x n_cols) = sum over i in idx (NULL: all n_idx first rows) of
 * X_t[i] * W[i, :], X is n_tok x n_rows; through ps_accum_rows. */
PS_API int ps_debug_accum_rows(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
                               const float *X, int32_t n_tok, const int32_t *idx, int64_t n_idx,
                               float *Y, int32_t n_threads);
/* Make the n-th allocation of the engine from now on (1 = the next one) fail
 * as if the system were out of memory, once; 0 turns this off. Claims of a
 * session's preallocated scratch during ps_session_eval count as
 * allocations, so an eval can be made to fail too. For tests of the error
 * paths; process-wide. */
PS_API void ps_debug_fail_alloc(int64_t n);

/* ---- quantizer ---------------------------------------------------------- */
/* Quantize n_rows rows of n_cols floats (row-major) into ggml type `type`
 * (Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), written row after row to dst
 * (ggml block layout, n_rows * n_cols / block * block_bytes bytes). Each
 * scale and level minimizes the squared error (no importance matrix).
 * PS_ERR_UNSUPPORTED for another type; PS_ERR_ARG when n_cols is not a
 * positive multiple of the block (32 or 256), dst_bytes is too small, or a
 * weight is not finite or beyond fp16's range; dst is then untouched. */
PS_API int ps_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
                            size_t dst_bytes);

/* ---- benchmark support ---------------------------------------------------
 * Not needed to run a model: `prosparse bench` uses these to state what a
 * decode step could reach on this machine's memory. */
/* Main-memory read bandwidth in GB/s (1e9 bytes/s): n_threads threads of the
 * engine's pool stream a buffer of `bytes` (>= 1 MiB; use >= 1 GiB, well above
 * the L3) `reps` times (1..64); the median pass. A negative PS_ERR_* on failure. */
PS_API double ps_debug_read_bandwidth(int n_threads, int64_t bytes, int reps);
/* The same over the model's own weights as the engine holds them (its
 * load-time copies, see model_pack.c): the memory a decode step reads.
 * PS_ERR_UNSUPPORTED when the model holds under 64 MiB of copies. */
PS_API double ps_model_read_bandwidth(const ps_model *model, int32_t n_threads, int32_t reps);

#ifdef __cplusplus
}
#endif
#endif /* PROSPARSE_H */
