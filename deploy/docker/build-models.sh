#!/usr/bin/env bash
# Convert the packaged models at image build time, as the image's user into its JOBSCORE_CACHE_DIR, so no
# container converts or downloads anything at start (deploy/Dockerfile runs this in both targets).
set -euo pipefail
: "${JOBSCORE_CACHE_DIR:?JOBSCORE_CACHE_DIR must be set}"
mkdir -p "$JOBSCORE_CACHE_DIR"
# The tiny Qwen3 test model (`--model tiny`: plumbing checks of a deployment in seconds).
jobscore build-tiny-model
# SmolLM2-135M-Instruct from the packaged GGUF: bfloat16 for the abstractive summarizer, float32 as the
# base of the shipped scorer and of compress/.
python -c "from engine.models import smollm2_dir; print(smollm2_dir(dtype='bfloat16')); print(smollm2_dir(dtype='float32'))"
# The shipped scorer (the worker's and the demo's default model): its adapter merged into the float32 base,
# so a container serves it without merging at start.
jobscore build-scorer
