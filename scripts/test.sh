#!/usr/bin/env bash
# Lint, then the whole test suite against real services (broker, Redis, vLLM on a tiny model).
set -uo pipefail
VENV="${VENV:-.venv}"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/ruff" format --check . || exit 1
# Strict type check of the rooms the services and publishers run on (pyproject.toml [tool.mypy]); the client
# and schemas also as Python 3.10, the oldest mypy can target (tests/test_client_dist.py runs them on 3.9).
"$VENV/bin/mypy" || exit 1
"$VENV/bin/mypy" --python-version 3.10 client schemas || exit 1
# Two test processes (pytest-xdist) by default: the suite mostly waits on group joins and child processes, so a
# second process fills those waits (tests/README.md "Suite time"). JOBSCORE_TEST_PROCESSES=0 runs it in one.
# --dist loadgroup hands whole files (and tests/conftest.py's XDIST_GROUPS) to one process each.
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=10 \
  -n "${JOBSCORE_TEST_PROCESSES:-2}" --dist loadgroup "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's "no tests collected": for this suite that means a broken selection or import, not success.
  echo "error: pytest collected no tests (exit code 5)" >&2
  exit 1
fi
exit "$rc"
