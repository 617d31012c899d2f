#!/usr/bin/env bash
# Issue 20: break the code on purpose, one mutation at a time, and show the test that guards the promise fails.
# Each mutation is applied alone, its test run (one process), the file restored with git checkout; every line
# should print rc=1. Usage: bash scripts/check_mutations.sh [NAME ...] (all: ~25 minutes on 2 CPUs, the demo's
# alone ~4; needs the mutated files unchanged in git). tests/README.md "Mutations checked" lists the results.
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
only=" $* "
run() { # name file old new pytest-args...
  local name=$1 file=$2 old=$3 new=$4
  shift 4
  [ "$only" = "  " ] || [[ "$only" == *" $name "* ]] || return 0
  [ -z "$(git status --porcelain -- "$file")" ] || { echo "$name: skipped, $file has local changes" >&2; return 0; }
  python3 - "$file" "$old" "$new" <<'PY' || { echo "$name: the code to mutate is not there any more" >&2; return 0; }
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
assert s.count(old) == 1, (p, old)
open(p, "w").write(s.replace(old, new))
PY
  "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider -n 0 "$@" > "${TMPDIR:-/tmp}/mutation-$name.log" 2>&1
  local rc=$?
  git checkout -q -- "$file"
  echo "$name: rc=$rc $(tail -1 "${TMPDIR:-/tmp}/mutation-$name.log")"
}

# 1. Scores belong to their own pairs; top_k is the true top-k.
run rotate-scores worker/loop.py "                for it, sc in zip(batch, scores, strict=True):
                    if it.state.finish_item" "                scores = list(scores[1:]) + list(scores[:1])
                for it, sc in zip(batch, scores, strict=True):
                    if it.state.finish_item" "tests/test_promises.py::TestScoresBelongToTheirPairs::test_mixed_requests_sharing_batches_score_each_pair_like_the_engine_directly[qwen3]"
run first-k-not-top-k worker/rank.py "    order = sorted(range(len(job_ids)), key=lambda i: (-scores[i], job_ids[i]))[:top_k]" \
  "    order = list(range(len(job_ids)))[:top_k]" tests/test_rank.py -k test_rank_keeps_true_top_k_with_their_own_scores
# 2. The Llama path.
run swap-yes-no-llama engine/engines.py '            "classifier_from_token": list(ANSWER_TOKENS),
            "method"' '            "classifier_from_token": list(reversed(ANSWER_TOKENS)),
            "method"' "tests/test_promises.py::TestAnswerTokens::test_llama_path_vllm_p_yes_equals_hf_and_full_logit_reference"
# 3. Graceful stop, revoke and signals really drain.
run drop-queued-on-stop worker/loop.py "                await self._answered.wait_for(lambda: self.offsets.in_flight() == 0 or self._failed is not None)" "                pass" "tests/test_worker.py::TestDelivery::test_stop_with_queued_work_answers_and_commits_all_of_it"
run drop-queued-on-sigterm worker/loop.py "                await self._answered.wait_for(lambda: self.offsets.in_flight() == 0 or self._failed is not None)" "                pass" tests/test_worker_scale.py -k test_sigterm_mid_stream_loses_nothing
run revoke-without-drain worker/loop.py "                await self._answered.wait_for(lambda: self.offsets.in_flight(revoked) == 0 or self._failed is not None)" \
  "                pass" tests/test_worker_scale.py -k test_second_worker_joining_while_work_is_in_flight_loses_and_repeats_nothing
run second-signal-ignored app/commands.py "                task.cancel()
                return" "                return" tests/test_worker_scale.py -k test_second_signal_aborts_a_stuck_drain_with_130
# 4. Cache semantics.
run summary-ttl-dropped jobscore/cache.py "ex=self.ttl_s or None" "ex=None" tests/test_summarizer_modes.py -k test_summary_entry_expires_after_summary_ttl_s
run repost-resummarized summarizer/writer.py "if h != content_hash(sp[1])]" "if True]" tests/test_summarizer_modes.py -k test_repost_with_same_content_is_not_resummarized
run token-cache-by-job-id worker/candidates.py "Candidate(job_id, rec.content_hash, rec.summary, None)" 'Candidate(job_id, "", rec.summary, None)' \
  tests/test_promises.py -k test_updated_posting_is_scored_on_its_new_text
# 5. The demo's own numbers: every dead letter of the run counted.
run demo-reads-one-dead-letter app/demo.py "from_beginning=True, idle_exit_s=DLQ_IDLE_S)" "from_beginning=True, idle_exit_s=DLQ_IDLE_S, limit=1)" \
  tests/test_cli.py -k test_demo_runs_end_to_end_and_reports
# 6. Smaller promises.
run invalid-reported-as-oversized schemas/topics.py '        return SchemaError("invalid", text)

    @staticmethod' '        return SchemaError("oversized", text)

    @staticmethod' tests/test_schemas.py -k test_decode_invalid_field_names_the_field
run backpressure-resumes-late worker/loop.py "        elif self._paused and queued <= limit // 2:" "        elif self._paused and queued <= 0:" \
  tests/test_worker_scale.py -k test_backpressure_pauses_at_max_queued_items_and_resumes_at_half
run parquet-drops-a-row summarizer/backfill.py "        for row in batch.to_pylist():" "        for row in batch.to_pylist()[1:]:" \
  tests/test_summarizer_backfill.py -k "parquet and resumed"
run expired-request-scored worker/loop.py "        if req.deadline is not None and now > req.deadline:" "        if False:" \
  tests/test_worker.py -k test_expired_deadline_answered_with_timeout_not_scored
run expired-queued-request-scored worker/batching.py "                if st.timed_out or st.expired(now):" "                if st.timed_out:" \
  tests/test_batching.py -k test_expired_request_is_dropped_not_scored
run lanes-bulk-first worker/batching.py "        for lane in LANES:  # online first" "        for lane in reversed(LANES):  # online first" "tests/test_lanes.py::test_bulk_lane_saturated_online_request_scored_in_next_batch"
# 7. Issue 26: the KV block size the engine asks for lets the shared prefix be reused (without it: vLLM's
#    128-token blocks, 0 tokens reused); the pruned scorer's build checks what it built.
run kv-block-none engine/engines.py "        if self.kv_block_size is not None:
            kwargs[\"block_size\"] = self.kv_block_size" "        if False:
            pass" \
  "tests/test_promises.py::TestAnswerTokens::test_prefix_reuse_hits_at_the_default_kv_block_size_and_scores_equal_hf"
run pruned-check-skipped engine/pruned_scorer.py "    if worst > manifest.tolerance:" "    if False:" \
  tests/test_pruned_scorer.py -k another_parent
