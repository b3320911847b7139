/* test_model.c: the model/session API refuses bad arguments with a code and a
 * message, never a crash (the cases that need a model file are in
 * tests/test_model_errors.py and tests/test_logits.py). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "prosparse.h"

TEST(load_refuses_null_and_missing_paths) {
    CHECK(ps_model_load(NULL) == NULL);
    CHECK(strstr(ps_last_error(), "NULL") != NULL);
    CHECK(ps_model_load("/nonexistent/model.gguf") == NULL);
    CHECK(ps_last_error()[0] != '\0');
    ps_model_free(NULL); /* no-op */
}

TEST(model_queries_with_null_model) {
    ps_model_info info;
    char buf[16];
    int32_t toks[4];
    CHECK(ps_model_get_info(NULL, &info) == PS_ERR_ARG);
    CHECK(ps_model_meta_str(NULL, "general.name", buf, sizeof buf) == PS_ERR_ARG);
    CHECK(ps_token_bos(NULL) == -1);
    CHECK(ps_token_eos(NULL) == -1);
    CHECK(ps_token_eot(NULL) == -1);
    CHECK(ps_token_is_eog(NULL, 0) == 0);
    CHECK(ps_model_add_bos(NULL) == 0);
    CHECK(ps_tokenize(NULL, "hi", 2, toks, 4, 0, 0) == PS_ERR_ARG);
    CHECK(ps_token_to_piece(NULL, 0, buf, sizeof buf, 0) == PS_ERR_ARG);
}

TEST(session_calls_with_null_session) {
    int32_t tok = 0;
    ps_layer_stats st;
    CHECK(ps_session_new(NULL, NULL) == NULL);
    CHECK(strstr(ps_last_error(), "model is NULL") != NULL);
    CHECK(ps_session_eval(NULL, &tok, 1, NULL) == PS_ERR_ARG);
    CHECK(ps_session_logits(NULL) == NULL);
    CHECK(ps_session_n_past(NULL) == 0);
    CHECK(ps_session_truncate(NULL, 0) == PS_ERR_ARG);
    CHECK(ps_session_set_mode(NULL, PS_MODE_DENSE) == PS_ERR_ARG);
    CHECK(ps_session_set_measure(NULL, 1) == PS_ERR_ARG);
    CHECK(ps_session_get_mode(NULL) == -1);
    CHECK(ps_session_layer_stats(NULL, &st, 1) == PS_ERR_ARG);
    ps_session_reset(NULL); /* no-ops */
    ps_session_free(NULL);
}

TEST(default_params) {
    ps_session_params p = ps_session_default_params();
    CHECK(p.n_threads == 0 && p.n_ctx == 0 && p.n_batch == 0 && p.mode == PS_MODE_DENSE);
}

int main(void) {
    RUN(load_refuses_null_and_missing_paths);
    RUN(model_queries_with_null_model);
    RUN(session_calls_with_null_session);
    RUN(default_params);
    return CHECK_DONE();
}
