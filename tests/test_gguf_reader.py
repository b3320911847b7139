"""native/gguf.c against gguf-py's GGUFReader on the real SmolLM2 file.

The reader is internal (not exported from libprosparse.so), so the test
compiles a small dump program against native/gguf.c and compares every key
(name, type), every tensor (name, type, shape, byte size, data offset) and
whole string arrays with what gguf-py reads from the same file.
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support import SMOLLM2

ROOT = Path(__file__).resolve().parents[1]

DUMP_C = r"""
#include <stdio.h>
#include <string.h>
#include "gguf.h"
#include "prosparse.h"
/* kv <name> <type> [elem_type n]; tensor <name> <type> <ne...> <nbytes> <file offset>;
   str <key> <i> <hex> for every element of the string arrays asked on argv. */
static void hex(ps_str s) { for (uint64_t i = 0; i < s.n; i++) printf("%02x", (unsigned char)s.p[i]); }
int main(int argc, char **argv) {
    ps_gguf *g = ps_gguf_open(argv[1]);
    if (!g) { printf("error %s\n", ps_last_error()); return 1; }
    const char *base = NULL;
    for (int64_t i = 0; i < ps_gguf_n_kv(g); i++) {
        ps_str k = ps_gguf_key_name(g, i);
        printf("kv %.*s %d", (int)k.n, k.p, ps_gguf_kv_type(g, i));
        if (ps_gguf_kv_type(g, i) == PS_GGUF_ARRAY) {
            char key[256]; snprintf(key, sizeof key, "%.*s", (int)k.n, k.p);
            int et; uint64_t n; ps_gguf_arr_info(g, key, &et, &n);
            printf(" %d %llu", et, (unsigned long long)n);
        }
        printf("\n");
    }
    for (int64_t i = 0; i < ps_gguf_n_tensors(g); i++) {
        const ps_gguf_tensor *t = ps_gguf_tensor_at(g, i);
        if (!base || (const char *)t->data < base) base = t->data;
    }
    for (int64_t i = 0; i < ps_gguf_n_tensors(g); i++) {
        const ps_gguf_tensor *t = ps_gguf_tensor_at(g, i);
        printf("tensor %.*s %d", (int)t->name.n, t->name.p, t->type);
        for (int d = 0; d < t->n_dims; d++) printf(" %lld", (long long)t->ne[d]);
        printf(" | %llu %lld\n", (unsigned long long)t->nbytes, (long long)((const char *)t->data - base));
    }
    for (int a = 2; a < argc; a++) {
        int et; uint64_t n;
        if (ps_gguf_arr_info(g, argv[a], &et, &n) != 0) continue;
        for (uint64_t i = 0; i < n; i++) { printf("str %s %llu ", argv[a], (unsigned long long)i); hex(ps_gguf_arr_str(g, argv[a], i)); printf("\n"); }
    }
    ps_gguf_close(g);
    return 0;
}
"""


@pytest.fixture(scope="module")
def dump_bin(tmp_path_factory):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("gguf_dump")
    (d / "dump.c").write_text(DUMP_C)
    exe = d / "dump"
    srcs = [d / "dump.c", ROOT / "native/gguf.c", ROOT / "native/quant.c", ROOT / "native/util.c"]
    # only the reader and the type table are needed: unused kernels are dropped (gc-sections)
    subprocess.run([cc, "-std=c11", "-O1", "-D_GNU_SOURCE", "-ffunction-sections", "-fdata-sections",
                    "-Wl,--gc-sections", "-I", str(ROOT / "native"), "-o", str(exe),
                    *map(str, srcs), "-lm", "-pthread"], check=True)
    return exe


@pytest.mark.real
def test_reader_matches_gguf_py_on_smollm2(dump_bin):
    if not SMOLLM2.exists():
        pytest.skip(f"{SMOLLM2} missing (make model)")
    from gguf import GGUFReader, GGUFValueType

    arrays = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"]
    out = subprocess.run([str(dump_bin), str(SMOLLM2), *arrays], check=True, capture_output=True).stdout
    kvs, tensors, strs = [], [], {a: [] for a in arrays}
    for line in out.decode().splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "kv":
            kvs.append(rest.split())
        elif kind == "tensor":
            head, tail = rest.split(" | ")
            f = head.split()
            nbytes, off = map(int, tail.split())
            tensors.append((f[0], int(f[1]), [int(x) for x in f[2:]], nbytes, off))
        elif kind == "str":
            key, _, hx = rest.split(" ")
            strs[key].append(bytes.fromhex(hx))

    r = GGUFReader(str(SMOLLM2))
    # gguf-py lists the three header fields as pseudo-keys "GGUF.*"
    ref_fields = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    assert [k[0] for k in kvs] == [f.name for f in ref_fields]
    for k, f in zip(kvs, ref_fields):
        assert int(k[1]) == int(f.types[0]), k
        if f.types[0] == GGUFValueType.ARRAY:
            assert int(k[2]) == int(f.types[-1]), k
            assert int(k[3]) == len(f.data), k

    assert len(tensors) == len(r.tensors) == 272
    base = min(t.data_offset for t in r.tensors)
    for mine, ref in zip(tensors, r.tensors):
        name, typ, shape, nbytes, off = mine
        assert name == ref.name
        assert typ == int(ref.tensor_type), name
        assert shape == [int(x) for x in ref.shape], name
        assert nbytes == int(ref.n_bytes), name
        assert off == int(ref.data_offset) - base, name

    for key in arrays:
        f = r.fields[key]
        ref = [bytes(f.parts[i]) for i in f.data]
        assert strs[key] == ref, key
    assert len(strs["tokenizer.ggml.tokens"]) == 49152


def test_reader_rejects_what_gguf_py_writes_broken(dump_bin, tmp_path):
    """A file written by gguf-py opens; the same file cut short does not."""
    from gguf import GGUFWriter
    path = tmp_path / "t.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "\u0120c"])
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = subprocess.run([str(dump_bin), str(path), "tokenizer.ggml.tokens"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "tensor token_embd.weight 0 32 2 | 256 0" in out.stdout
    assert "str tokenizer.ggml.tokens 2 c4a063" in out.stdout

    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-1])
    out = subprocess.run([str(dump_bin), str(cut)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "tensor 'token_embd.weight' data [" in out.stdout and "past end of file" in out.stdout
