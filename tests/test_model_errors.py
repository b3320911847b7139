"""Models that are valid GGUF but not a model we can run (or not consistent):
each must fail to load with a clear ProSparseError naming the problem, never
crash. `make asan` runs these under AddressSanitizer + UBSan.

Each case rewrites a good tiny file with gguf-py, changing one thing.
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from support.gguf_files import write_gguf
from support.hf_models import make_hf_llama
from support.vocab import N_VOCAB, byte_vocab
from prosparse_cpu import Model, ProSparseError

pytestmark = pytest.mark.asan


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_llama(seed=21, n_layer=2)


@pytest.fixture(scope="module")
def good_llama(hf_model, tmp_path_factory):
    return write_gguf(hf_model, tmp_path_factory.mktemp("good") / "llama.gguf")


@pytest.fixture(scope="module")
def good_sparse(hf_model, tmp_path_factory):
    return write_gguf(hf_model, tmp_path_factory.mktemp("good") / "sparse.gguf", arch="prosparse",
                         activation="relu")


def rewrite(src, dst, arch=None, set_kv=None, drop_kv=(), drop_tensors=(), tensors=None):
    """Copy a GGUF file changing one thing. set_kv: {key: (value, GGUFValueType)};
    tensors: {name: array} added or replacing; keys are renamed with arch."""
    r = gguf.GGUFReader(str(src))
    old_arch = r.fields["general.architecture"].contents()
    arch = arch or old_arch
    w = gguf.GGUFWriter(str(dst), arch)
    set_kv = dict(set_kv or {})
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_kv:
            continue
        new_key = arch + key[len(old_arch):] if key.startswith(old_arch + ".") else key
        if new_key in set_kv or new_key in drop_kv:
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(new_key, f.contents(), f.types[0], sub)
    for key, (val, vtype, *sub) in set_kv.items():
        w.add_key_value(key, val, vtype, sub[0] if sub else None)
    tensors = dict(tensors or {})
    for t in r.tensors:
        if t.name in drop_tensors:
            continue
        if t.name in tensors:
            w.add_tensor(t.name, tensors.pop(t.name))
        else:
            w.add_tensor(t.name, np.array(t.data))
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


VT = gguf.GGUFValueType


def load_error(path) -> str:
    with pytest.raises(ProSparseError) as e:
        Model(path, threads=1, n_ctx=32)
    return str(e.value)


def rand(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_good_files_load(good_llama, good_sparse):
    with Model(good_llama, threads=1, n_ctx=32) as m:
        assert (m.info.arch, m.info.activation, m.info.has_predictor) == ("llama", "silu", False)
    with Model(good_sparse, threads=1, n_ctx=32) as m:
        assert (m.info.arch, m.info.activation) == ("prosparse", "relu")


def test_missing_tensor(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", drop_tensors=["blk.1.ffn_up.weight"])
    assert "missing tensor 'blk.1.ffn_up.weight'" in load_error(p)


def test_missing_output_norm(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", drop_tensors=["output_norm.weight"])
    assert "missing tensor 'output_norm.weight'" in load_error(p)


def test_wrong_shape_names_expected_and_found(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", tensors={"blk.0.attn_k.weight": rand(64, 64)})
    msg = load_error(p)
    assert "blk.0.attn_k.weight" in msg and "[64, 64" in msg and "expected [64, 32]" in msg


def test_wrong_norm_type(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf",
                tensors={"blk.0.ffn_norm.weight": np.ones(64, dtype=np.float16)})
    assert "blk.0.ffn_norm.weight" in load_error(p) and "f32" in load_error(p)


def test_unsupported_architecture(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", arch="gpt2")
    assert "architecture 'gpt2' is not supported" in load_error(p)


def test_unknown_activation(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", set_kv={"prosparse.ffn.activation": ("gelu", VT.STRING)})
    assert "unknown activation 'gelu'" in load_error(p)


def test_missing_activation_key(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", drop_kv=["prosparse.ffn.activation"])
    assert "prosparse.ffn.activation" in load_error(p)


def test_unsupported_rope_scaling(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={"llama.rope.scaling.type": ("yarn", VT.STRING)})
    assert "rope scaling 'yarn'" in load_error(p)


def test_unexpected_tensor_is_refused(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", tensors={"blk.0.attn_q.bias": rand(64)})
    assert "blk.0.attn_q.bias" in load_error(p)


def test_llama3_rope_freqs_refused(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", tensors={"rope_freqs.weight": rand(8)})
    assert "rope_freqs.weight" in load_error(p)


def test_vocab_size_key_mismatch(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={"llama.vocab_size": (N_VOCAB + 1, VT.UINT32)})
    assert "vocab_size" in load_error(p)


def test_tokenizer_and_embedding_disagree(good_llama, tmp_path):
    toks, types, _ = byte_vocab()
    p = rewrite(good_llama, tmp_path / "x.gguf", drop_kv=["llama.vocab_size"], set_kv={
        "tokenizer.ggml.tokens": (toks + ["<extra>"], VT.ARRAY, VT.STRING),
        "tokenizer.ggml.token_type": (types + [1], VT.ARRAY, VT.INT32),
    })
    assert "tokenizer has 266 tokens but token_embd has 265 rows" in load_error(p)


def test_n_embd_not_divisible_by_n_head(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={"llama.attention.head_count": (5, VT.UINT32),
                                                      "llama.attention.head_count_kv": (5, VT.UINT32)})
    assert "not divisible" in load_error(p)


def test_gqa_heads_not_a_multiple(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={"llama.attention.head_count_kv": (3, VT.UINT32)})
    assert "not a multiple of n_head_kv" in load_error(p)


@pytest.mark.parametrize("key,value", [("llama.block_count", 100000), ("llama.block_count", 0),
                                       ("llama.embedding_length", 1 << 30),
                                       ("llama.attention.head_count", 0)])
def test_absurd_hparams(good_llama, tmp_path, key, value):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={key: (value, VT.UINT32)})
    assert key in load_error(p) and "out of range" in load_error(p)


def test_missing_required_key(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", drop_kv=["llama.feed_forward_length"])
    assert "missing key llama.feed_forward_length" in load_error(p)


def test_key_of_wrong_type(good_llama, tmp_path):
    p = rewrite(good_llama, tmp_path / "x.gguf", set_kv={"llama.block_count": ("two", VT.STRING)})
    assert "llama.block_count" in load_error(p)


def test_prosparse_with_both_down_forms(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", tensors={"blk.0.ffn_down.weight": rand(64, 96)})
    assert "both ffn_down and ffn_down_t" in load_error(p)


def test_prosparse_missing_down(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", drop_tensors=["blk.1.ffn_down_t.weight"])
    assert "missing tensor 'blk.1.ffn_down_t.weight'" in load_error(p)


def test_llama_file_with_down_t_is_refused(good_sparse, tmp_path):
    """ffn_down_t belongs to prosparse files; a llama file carrying it instead
    of ffn_down is missing its down projection."""
    p = rewrite(good_sparse, tmp_path / "x.gguf", arch="llama")
    assert "missing tensor 'blk.0.ffn_down.weight'" in load_error(p)


def _predictor(rank, layers=(0, 1), bad_out=False):
    t = {}
    for i in layers:
        t[f"blk.{i}.ffn_pred_in.weight"] = rand(rank, 64)
        t[f"blk.{i}.ffn_pred_out.weight"] = rand(96 if not bad_out else 95, rank)
    return t


def test_predictor_and_freq_tensors(good_sparse, tmp_path):
    extra = _predictor(16)
    extra.update({f"blk.{i}.ffn_freq": np.linspace(1, 0, 96, dtype=np.float32) for i in (0, 1)})
    p = rewrite(good_sparse, tmp_path / "x.gguf", tensors=extra)
    with Model(p, threads=1, n_ctx=32) as m:
        assert m.info.has_predictor and m.info.predictor_rank == 16
        m.eval([1, 2, 3])


def test_predictor_in_some_layers_only(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", tensors=_predictor(16, layers=(0,)))
    assert "predictor" in load_error(p)


def test_predictor_wrong_shape(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", tensors=_predictor(16, bad_out=True))
    assert "blk.0.ffn_pred_out.weight" in load_error(p)


def test_freq_wrong_shape(good_sparse, tmp_path):
    p = rewrite(good_sparse, tmp_path / "x.gguf", tensors={"blk.0.ffn_freq": np.ones(95, np.float32)})
    assert "blk.0.ffn_freq" in load_error(p)


def test_session_argument_checks(good_llama):
    """Raw C calls with bad arguments: error codes, no crash."""
    import ctypes

    from prosparse_cpu._lib import lib, ps_session_params

    L = lib()
    assert not L.ps_model_load_ex(str(good_llama).encode(), 6)  # unknown flags
    assert b"unknown load flags" in L.ps_last_error()
    m = L.ps_model_load(str(good_llama).encode())
    assert m
    try:
        p = L.ps_session_default_params()
        for field, value in (("n_ctx", 1 << 24), ("n_threads", 100000), ("mode", 17)):
            bad = ps_session_params(p.n_threads, p.n_ctx, p.n_batch, p.mode)
            setattr(bad, field, value)
            assert not L.ps_session_new(m, ctypes.byref(bad))
            assert L.ps_last_error()
        p.n_threads, p.n_ctx, p.n_batch = 1, 16, 4
        s = L.ps_session_new(m, ctypes.byref(p))
        assert s
        try:
            toks = (ctypes.c_int32 * 4)(1, 2, 3, 4)
            assert L.ps_session_eval(s, toks, -1, None) == -4          # PS_ERR_ARG
            assert L.ps_session_eval(s, None, 3, None) == -4
            assert L.ps_session_eval(s, toks, 0, None) == 0            # nothing to do
            assert not L.ps_session_logits(s)                          # no logits before an eval
            assert L.ps_session_eval(s, toks, 4, None) == 0
            assert L.ps_session_logits(s)
            assert L.ps_session_truncate(s, 5) == -4
            assert L.ps_session_truncate(s, -1) == -4
            assert L.ps_session_truncate(s, 2) == 0
            assert L.ps_session_n_past(s) == 2
            assert L.ps_session_set_mode(s, 42) == -4
            assert L.ps_session_set_mode(s, 1) == -3                   # PS_ERR_UNSUPPORTED
            assert L.ps_session_layer_stats(s, None, 4) == -4
            assert L.ps_session_layer_stats(s, None, 0) == 2           # n_layer
            big = (ctypes.c_int32 * 15)(*range(15))
            assert L.ps_session_eval(s, big, 15, None) == -6           # PS_ERR_CONTEXT
            assert L.ps_session_n_past(s) == 2
        finally:
            L.ps_session_free(s)
        buf = ctypes.create_string_buffer(8)
        assert L.ps_token_to_piece(m, N_VOCAB, buf, 8, 0) == -4
        assert L.ps_token_to_piece(m, -5, buf, 8, 0) == -4
        assert L.ps_tokenize(m, b"hi", -2, None, 0, 0, 0) == -4
        assert L.ps_model_meta_str(m, b"no.such.key", buf, 8) < 0
        n = L.ps_model_meta_str(m, b"general.architecture", buf, 4)
        assert n == 5 and buf.value == b"lla"                        # truncated, NUL-terminated
        assert L.ps_model_read_bandwidth(None, 2, 1) == -4
        assert L.ps_model_read_bandwidth(m, 0, 1) == -4
        assert L.ps_model_read_bandwidth(m, 1, 0) == -4
        assert L.ps_model_read_bandwidth(m, 1, 1) == -3              # a tiny model: too small to measure
    finally:
        L.ps_model_free(m)
