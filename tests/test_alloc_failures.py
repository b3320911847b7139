"""Out of memory anywhere gives a clean error, never a crash or a wrong answer.

ps_debug_fail_alloc(n) makes the engine's n-th allocation from now on fail
(claims of a session's preallocated scratch during an eval count too). Every
n is tried in turn, from the first allocation of loading a model until the
load, the session and an eval all get through. `make asan` runs these under
AddressSanitizer + UBSan."""
import numpy as np
import pytest

from prosparse_cpu import Model, ProSparseError
from prosparse_cpu._lib import lib

from support.gguf_files import write_tiny_llama

pytestmark = pytest.mark.asan

IDS = [1, 5, 9, 14, 3, 22, 7, 30]


@pytest.fixture(scope="module")
def relu_path(tmp_path_factory):
    return str(write_tiny_llama(tmp_path_factory.mktemp("alloc") / "relu.gguf", activation="relu", predictor_rank=8))


def failing(n):
    """Context: the n-th allocation from now fails; off again on exit."""
    class _Ctx:
        def __enter__(self):
            lib().ps_debug_fail_alloc(n)

        def __exit__(self, *exc):
            lib().ps_debug_fail_alloc(0)
    return _Ctx()


def clean_logits(path, mode):
    with Model(path, threads=2, n_ctx=64, n_batch=4, mode=mode) as m:
        return m.eval_all(IDS)


@pytest.mark.parametrize("mode", ["dense", "predict"])
def test_every_allocation_of_load_and_session_can_fail(relu_path, mode):
    failures = 0
    for n in range(1, 5000):
        with failing(n):
            try:
                m = Model(relu_path, threads=2, n_ctx=64, n_batch=4, mode=mode)
            except ProSparseError as e:
                assert str(e).strip(), f"allocation {n}: an error without a message"
                failures += 1
                continue
        break
    else:
        pytest.fail("loading never got through")
    assert failures >= 20   # the vocabulary, the model, the pool and the session all allocate
    with m:
        got = m.eval_all(IDS)
    assert np.array_equal(got, clean_logits(relu_path, mode))


@pytest.mark.parametrize("mode", ["dense", "sparse", "predict"])
def test_a_failed_eval_leaves_the_session_as_it_was(relu_path, mode):
    ref = clean_logits(relu_path, mode)
    with Model(relu_path, threads=2, n_ctx=64, n_batch=4, mode=mode) as m:
        m.eval(IDS[:2])
        failures = 0
        for n in range(1, 1000):
            with failing(n):
                try:
                    m.eval(IDS[2:])
                except ProSparseError as e:
                    assert "scratch" in str(e)
                    assert m.n_past == 2 and m.tokens == IDS[:2]
                    failures += 1
                    continue
            break
        assert failures >= 4   # each batch's down projections claim scratch (n_layer x 2 batches)
        assert m.n_past == len(IDS)
        assert np.array_equal(m.logits(), ref[-1])
