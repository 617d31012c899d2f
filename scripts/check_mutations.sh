#!/usr/bin/env bash
# Issue 20: break the code on purpose, one mutation at a time, and show the test that guards the promise fails.
# Each mutation is applied alone, its test run (one process), the file restored with git checkout; every line
# should print rc=1. Usage: bash scripts/check_mutations.sh (about 5 minutes on 2 CPUs; needs a clean tree).
cd "$(dirname "$0")/.."
[ -z "$(git status --porcelain -- worker engine)" ] || { echo "error: worker/ or engine/ has local changes; commit or stash them first" >&2; exit 2; }
export VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
run() { # name file python-old python-new test
  python3 - "$2" "$3" "$4" <<'PY'
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
assert s.count(old) == 1, (p, old)
open(p, "w").write(s.replace(old, new))
PY
  "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider -n 0 "$5" > "${TMPDIR:-/tmp}/mutation-$1.log" 2>&1
  rc=$?
  git checkout -q -- "$2"
  echo "$1: rc=$rc $(tail -1 ${TMPDIR:-/tmp}/mutation-$1.log)"
}
run rotate-scores worker/loop.py "                for it, sc in zip(batch, scores, strict=True):
                    if it.state.finish_item" "                scores = list(scores[1:]) + list(scores[:1])
                for it, sc in zip(batch, scores, strict=True):
                    if it.state.finish_item" "tests/test_promises.py::TestScoresBelongToTheirPairs::test_mixed_requests_sharing_batches_score_each_pair_like_the_engine_directly[qwen3]"
run swap-yes-no-llama engine/engines.py '            "classifier_from_token": list(ANSWER_TOKENS),
            "method"' '            "classifier_from_token": list(reversed(ANSWER_TOKENS)),
            "method"' "tests/test_promises.py::TestAnswerTokens::test_llama_path_vllm_p_yes_equals_hf_and_full_logit_reference"
run drop-queued-on-stop worker/loop.py "                await self._answered.wait_for(lambda: self.offsets.in_flight() == 0 or self._failed is not None)" "                pass" "tests/test_worker.py::TestDelivery::test_stop_with_queued_work_answers_and_commits_all_of_it"
run lanes-bulk-first worker/batching.py "        for lane in LANES:  # online first" "        for lane in reversed(LANES):  # online first" "tests/test_lanes.py::test_bulk_lane_saturated_online_request_scored_in_next_batch"
