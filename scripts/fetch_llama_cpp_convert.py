"""Fetch llama.cpp's own HF -> GGUF converter (convert_hf_to_gguf.py, its
conversion/ package and its gguf-py) from the llama-cpp-python sdist on PyPI,
the version installed in this environment, so the tests can compare the
engine on files llama.cpp itself wrote.

    fetch_llama_cpp_convert.py --out ~/.cache/prosparse-cpu/llama.cpp-convert

The tests find the script through env PROSPARSE_LLAMA_CPP_CONVERT (the
Makefile sets it to OUT/convert_hf_to_gguf.py). The files are extracted into
a temporary folder and renamed at the end: a failed fetch leaves nothing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version

MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def fetch(out: str) -> None:
    if os.path.isfile(os.path.join(out, "convert_hf_to_gguf.py")):
        return
    try:
        v = version("llama-cpp-python")
    except PackageNotFoundError:
        raise SystemExit("fetch_llama_cpp_convert: llama-cpp-python is not installed (make setup)") from None
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # the sdist itself (its build tools as wheels): pip reads its metadata before keeping it
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
                        f"llama-cpp-python=={v}", "-d", tmp], check=True)
        sdist = os.path.join(tmp, f"llama_cpp_python-{v}.tar.gz")
        prefix = f"llama_cpp_python-{v}/vendor/llama.cpp/"
        part = os.path.join(tmp, "convert")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and any(m.name[len(prefix):].startswith(x) for x in MEMBERS)]
            if not any(m.name == prefix + MEMBERS[0] for m in members):
                raise SystemExit(f"fetch_llama_cpp_convert: {sdist} has no {prefix}{MEMBERS[0]}")
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(part, members=members, filter="data")
        shutil.move(part, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to hold convert_hf_to_gguf.py and its packages")
    fetch(ap.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
