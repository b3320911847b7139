"""A small reader of a GGUF file's key/value section, for metadata of large
vocabularies: gguf-py's GGUFReader builds numpy views for every string of a
262k-token array and needs half a minute for it, this reads them in a second.

read_kv(path, prefix) -> {key: (value_type, value)} for the keys starting with
prefix; strings stay bytes, arrays are (element_type, list).
"""
from __future__ import annotations

import struct

# GGUF value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
# 9 array, 10 u64, 11 i64, 12 f64
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


def read_kv(path, prefix: str = "") -> dict:
    with open(path, "rb") as f:
        data = f.read(1 << 20)
        pos = 0

        def need(n):
            nonlocal data
            while pos + n > len(data):
                more = f.read(max(n, 1 << 24))
                if not more:
                    raise ValueError(f"{path}: truncated key/value section")
                data += more

        def take(fmt):
            nonlocal pos
            n = struct.calcsize(fmt)
            need(n)
            v = struct.unpack_from("<" + fmt, data, pos)
            pos += n
            return v[0] if len(v) == 1 else v

        def string():
            nonlocal pos
            n = take("Q")
            need(n)
            s = data[pos:pos + n]
            pos += n
            return bytes(s)

        def value(t):
            nonlocal pos
            if t == STRING:
                return string()
            if t == ARRAY:
                et, n = take("I"), take("Q")
                if et == STRING:
                    return et, [string() for _ in range(n)]
                fmt = f"<{n}{_SCALAR[et]}"
                need(struct.calcsize(fmt))
                vals = list(struct.unpack_from(fmt, data, pos))
                pos += struct.calcsize(fmt)
                return et, vals
            return take(_SCALAR[t])

        magic, _version, _n_tensors, n_kv = take("4s"), take("I"), take("Q"), take("Q")
        if magic not in (b"GGUF", b"PWRI"):
            raise ValueError(f"{path}: not a GGUF file")
        out = {}
        for _ in range(n_kv):
            key = string().decode()
            t = take("I")
            v = value(t)
            if key.startswith(prefix):
                out[key] = (t, v)
        return out
