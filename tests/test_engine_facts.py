"""Facts about a session come from the engine, not from a second copy of its
rules in Python: the context length after defaults, and the modes a file runs."""
import pytest

from prosparse_cpu import Model, ProSparseError

from support.gguf_files import write_gguf
from support.hf_models import make_hf_llama


@pytest.mark.parametrize("file_ctx, asked, expect", [(512, 0, 512), (0, 0, 4096), (8192, 0, 4096), (512, 100, 100)])
def test_n_ctx_is_the_sessions(tmp_path, file_ctx, asked, expect):
    path = write_gguf(make_hf_llama(seed=3), tmp_path / "m.gguf", n_ctx=file_ctx)
    with Model(path, threads=1, n_ctx=asked) as m:
        assert m.n_ctx == expect


def test_supported_modes_follow_the_engine(tmp_path):
    hf = make_hf_llama(seed=4)
    silu = write_gguf(hf, tmp_path / "silu.gguf")
    relu_cut = write_gguf(hf, tmp_path / "relu.gguf", arch="prosparse", activation="relu", cutoffs=[0.1, 0.1])
    silu_cut = write_gguf(hf, tmp_path / "thr.gguf", arch="prosparse", activation="silu", cutoffs=[0.1, 0.1])
    with Model(silu, threads=1, n_ctx=32) as m:
        assert m.supported_modes() == ["dense"]
    with Model(silu_cut, threads=1, n_ctx=32) as m:
        assert m.supported_modes() == ["dense", "threshold"]
    with Model(relu_cut, threads=1, n_ctx=32) as m:
        assert m.supported_modes() == ["dense", "sparse"]
        assert not m.supports_mode("threshold")
        with pytest.raises(ProSparseError, match="for SiLU and GELU models"):
            m.set_mode("threshold")
