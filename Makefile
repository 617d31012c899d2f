# Two commands on a fresh machine:
#   make demo   — set up the environment and run the whole pipeline on the embedded stack
#   make test   — set up the environment and run the test suite (what CI runs)
VENV ?= .venv

.PHONY: setup demo test bench clean

$(VENV)/.ready: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $@

setup: $(VENV)/.ready

demo: setup
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-2} $(VENV)/bin/jobscore demo

test: setup
	VENV=$(VENV) bash scripts/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
