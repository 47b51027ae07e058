"""Convert the same SmolLM2-135M-Instruct weights into each peer's format (run with the peers venv's python).

    GGUF F16  llama.cpp's own convert_hf_to_gguf.py (from the llama-cpp-python sdist's vendored llama.cpp)
    GGUF Q4_0 llama_model_quantize (the llama-cpp-python binding) from the F16 file
    ONNX      onnxruntime-genai's model builder, int4 and fp32, CPU, from the local HF directory (-i)

Usage: convert.py HF_DIR SDIST_TARBALL OUT_DIR   (skips outputs that already exist)
"""

import subprocess
import sys
import tarfile
from pathlib import Path


def gguf(hf_dir: Path, sdist: Path, out: Path) -> None:
    f16, q4 = out / "smollm2-135m-f16.gguf", out / "smollm2-135m-q4_0.gguf"
    if not f16.exists():
        src = out / "llama-cpp-python-src"
        if not src.exists():
            with tarfile.open(sdist) as tar:
                tar.extractall(src, filter="data")
        script = next(src.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
        subprocess.run([sys.executable, str(script), str(hf_dir), "--outfile", str(f16), "--outtype", "f16"],
                       check=True)
    if not q4.exists():
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        if llama_cpp.llama_model_quantize(str(f16).encode(), str(q4).encode(), params) != 0:
            raise SystemExit("llama_model_quantize failed")


def genai(hf_dir: Path, out: Path) -> None:
    for precision in ("int4", "fp32"):
        target = out / f"genai-{precision}"
        if (target / "genai_config.json").exists():
            continue
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(target),
                        "-p", precision, "-e", "cpu", "-c", str(out / "hf-cache")], check=True)


def main() -> None:
    hf_dir, sdist, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    gguf(hf_dir, sdist, out)
    genai(hf_dir, out)


if __name__ == "__main__":
    main()
