"""Broken GGUF files, seen by a user: ProSparseError from Model(), and one line on
stderr plus a non-zero exit from `prosparse generate` and `prosparse inspect`.

(The C side is tested by native/tests; `make asan` runs these under
AddressSanitizer + UBSan with the sanitized library preloaded.)
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from gguf import GGMLQuantizationType as QT

from prosparse_cpu import Model, ProSparseError
from support.gguf_files import write_tiny_llama

pytestmark = pytest.mark.asan

TENSOR = "blk.0.ffn_gate.weight"


def _tensor_info_at(data: bytes, name: str) -> int:
    """Byte offset of n_dims in a tensor-info record (u64 len, name, u32 n_dims, u64 dims[], u32 type, u64 offset)."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.find(key)
    assert at > 0, name
    return at + len(key)


def _patch(path, make):
    data = bytearray(path.read_bytes())
    make(data)
    path.write_bytes(bytes(data))


def _set_dim0(data: bytearray, value: int) -> None:
    at = _tensor_info_at(data, TENSOR)
    struct.pack_into("<Q", data, at + 4, value)


def _set_type(data: bytearray, value: int) -> None:
    at = _tensor_info_at(data, TENSOR)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, value)


def _make(kind: str, path):
    """Write the broken file of one kind at path."""
    if kind == "missing_tensor":
        return write_tiny_llama(path, drop=("blk.1.ffn_up.weight",))
    if kind == "wrong_shape":
        return write_tiny_llama(path, shapes={TENSOR: (64, 16)})  # n_embd is 32
    if kind == "kquant_past_eof":  # the last tensor, Q6_K, loses its last bytes
        write_tiny_llama(path, n_ff=256, qtypes={"blk.1.ffn_down.weight": QT.Q6_K})
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 100)
        return path
    write_tiny_llama(path)
    size = path.stat().st_size
    if kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(200)  # inside the key-value section
    elif kind == "wrong_magic":
        _patch(path, lambda d: d.__setitem__(slice(0, 4), b"GGUX"))
    elif kind == "unsupported_version":
        _patch(path, lambda d: struct.pack_into("<I", d, 4, 99))
    elif kind == "data_past_eof":
        with open(path, "r+b") as f:
            f.truncate(size - 64)  # the last tensor's bytes end past the end of the file
    elif kind == "absurd_dims":
        _patch(path, lambda d: _set_dim0(d, 1 << 60))
    elif kind == "unknown_type":
        _patch(path, lambda d: _set_type(d, 99))
    elif kind == "kquant_row_length":  # 32 columns are not whole 256-element Q4_K blocks
        _patch(path, lambda d: _set_type(d, int(QT.Q4_K)))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(kind)
    return path


KINDS = ["truncated", "wrong_magic", "unsupported_version", "data_past_eof", "absurd_dims", "unknown_type",
         "missing_tensor", "wrong_shape", "empty", "kquant_row_length", "kquant_past_eof"]


@pytest.fixture(params=KINDS)
def bad_file(request, tmp_path):
    return request.param, str(_make(request.param, tmp_path / f"{request.param}.gguf"))


def test_valid_tiny_file_loads(tmp_path):
    # The base of every broken file is itself fine: the failures below are the damage's.
    with Model(write_tiny_llama(tmp_path / "ok.gguf"), threads=1, n_ctx=32) as m:
        assert m.info.n_layer == 2


def test_model_raises(bad_file):
    kind, path = bad_file
    with pytest.raises(ProSparseError) as err:
        Model(path, threads=1, n_ctx=32)
    msg = str(err.value)
    assert msg and "\n" not in msg
    assert path in msg  # says which file


@pytest.mark.parametrize("kind,says", [("kquant_row_length", "not a multiple of the q4_k block size 256"),
                                       ("kquant_past_eof", "blk.1.ffn_down.weight")])
def test_bad_kquant_tensor_message(tmp_path, kind, says):
    path = str(_make(kind, tmp_path / f"{kind}.gguf"))
    with pytest.raises(ProSparseError) as err:
        Model(path, threads=1, n_ctx=32)
    print(err.value)
    assert says in str(err.value)


def _cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "prosparse_cpu.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("command", [["generate", "-p", "hi", "-n", "2"], ["inspect"]])
def test_cli_one_line_error(bad_file, command):
    kind, path = bad_file
    r = _cli(command[0], path, *command[1:])
    assert r.returncode != 0, (kind, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (kind, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stdout == "", (kind, r.stdout)  # no partial report before the error


@pytest.mark.parametrize("args", [
    ["generate", "/nonexistent/model.gguf", "-p", "x"],
    ["inspect", "/nonexistent/model.gguf"],
    ["inspect", "."],
    ["generate", "--bogus-option"],
    ["chat"],
    ["nosuchcommand"],
])
def test_cli_user_mistakes(args):
    r = _cli(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def test_cli_bad_mode_and_threads(tiny_path):
    for extra in (["--mode", "fastest"], ["--threads", "0"], ["-n", "-3"]):
        r = _cli("generate", tiny_path, "-p", "x", *extra)
        assert r.returncode != 0, extra
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_model_bad_arguments(tiny_path):
    with pytest.raises(ProSparseError, match="unknown mode"):
        Model(tiny_path, mode="fastest")
    with pytest.raises(ProSparseError, match="threads"):
        Model(tiny_path, threads=0)
    with pytest.raises(ProSparseError, match="no such file"):
        Model(tiny_path + ".missing")
