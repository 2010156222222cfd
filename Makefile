# Two entry points: `make run` (the default job) and `make test` (the test suite); `make lint` checks the code with
# ruff (formatting, then the rules in pyproject.toml [tool.ruff]), `make format` fixes what ruff can and formats the code.
# Each creates .venv if missing, installs the CPU build of torch and protosphere with its dev extras, and makes sure
# the real Fashion-MNIST data is there (target `data`): the job trains on it and the real-data tests read it.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
CONFIG ?= configs/default.yaml
ARGS ?=

.PHONY: run test lint format install data browser bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# a local wheel (pip find-links) first, else the official CPU wheel index; never the multi-GB CUDA build
	@$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
	  || { $(PY) -m pip install -q --no-index --no-deps torch==$(TORCH_VERSION) 2>/dev/null \
	       && $(PY) -m pip install -q torch==$(TORCH_VERSION); } \
	  || $(PY) -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Fashion-MNIST, tried in order: already here ($$PROTOSPHERE_DATA, the Debian package, the user cache), then the Debian
# package dataset-fashion-mnist (as root with apt-get), then a checksummed download; "error:" only when all fail
data: install
	@$(PY) -m protosphere.cli datasets --ensure fashion_mnist --no-download 2>/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && echo "note: Fashion-MNIST is not on this machine; installing the Debian package dataset-fashion-mnist" \
	       && apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
	       && $(PY) -m protosphere.cli datasets --ensure fashion_mnist --no-download; } \
	  || { echo "note: Fashion-MNIST is not on this machine and no Debian package could be installed; downloading it" \
	       && $(PY) -m protosphere.cli datasets --ensure fashion_mnist; }

run: data
	$(PY) -m protosphere.cli run $(CONFIG) --overwrite $(ARGS)

# the report-page test drives a real headless Chromium; as root on Debian it is installed when missing
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && echo "installing the Debian package chromium (for the report-page test)" \
	       && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: no Chromium and no root apt-get; the report-page browser test will be skipped"

test: data browser
	$(PY) -m pytest $(ARGS)

# the same benchmarks as `protosphere bench` (throughput at batch 256 and on the batch-10 Mammoth protocol, losses);
# ARGS passes its options, e.g. ARGS="--only losses --out runs/bench.txt"
bench: install
	$(PY) -m protosphere.cli bench $(ARGS)

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache
