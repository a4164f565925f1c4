#!/usr/bin/env bash
# Build llama-cpp-python (the `llamacpp` extra: bench/generate_smollm2.py's and bench/serve_load.py's
# reference engine) from source for this CPU, with AMX left out. ~5-10 min on 2 cores (6.7 here).
#   Why not `pip install '.[llamacpp]'`: its default -march=native build uses AMX tile instructions
#   whenever the CPU reports AMX, and in VMs that report AMX without granting the tiles it dies with
#   SIGSEGV at its first quantized matrix product (docs/serve.md). Here every other instruction set the
#   CPU reports (AVX2, AVX-512, VNNI, ...) is switched on by name; AMX is switched off.
#   --no-binary and --no-cache-dir stop pip from reusing a wheel it built with other flags.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
args="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)"
args+=" -DGGML_F16C=$(has f16c) -DGGML_BMI2=$(has bmi2) -DGGML_AVX512=$(has avx512f)"
args+=" -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AVX_VNNI=$(has avx_vnni)"
args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
echo "setup_llamacpp: CMAKE_ARGS=$args"
CMAKE_ARGS="$args" .venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir \
  --force-reinstall --no-deps --no-binary llama-cpp-python -c constraints.txt 'llama-cpp-python[server]==0.3.36'
# the server extra's own dependencies (fastapi, uvicorn, ...) come from the registry as wheels
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[llamacpp]'
.venv/bin/python -c "import llama_cpp; print('llama.cpp ready:', llama_cpp.__version__)"
