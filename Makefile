# griffin-trt: `make engines` (build the embedded demo deployment), `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
RECIPE ?= build/demo.toml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
TORCH_VERSION ?= 2.13.0
# Where CPU-only torch wheels come from on a host whose default index serves CUDA builds
# (for example https://download.pytorch.org/whl/cpu); empty: the configured index/find-links.
TORCH_CPU_INDEX ?=

.PHONY: venv engines generate serve bench test test-gpu clean help

help:
	@echo "make engines  [RECIPE=build/demo.toml]  build graphs/engines + filled triton_repo"
	@echo "make test                               run the test suite (CPU)"
	@echo "make serve    [RECIPE=...]              start tritonserver on the built repository"
	@echo "make bench    [RECIPE=...] [ARGS=...]   gRPC benchmark: GRIFFIN vs plain decoding"
	@echo "make generate [ARGS='--prompt ...']     one generation from the command line"

# CPU hosts get the CPU torch wheel; pip never pulls CUDA wheels or the TensorRT extra here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"; \
	else \
	  $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)); \
	  $(BIN)/python -c "import torch,sys; sys.exit('a CUDA torch wheel was installed on a CPU host; set TORCH_CPU_INDEX' if torch.version.cuda else 0)"; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The demo's 12-layer target: the TorchScript exporter writes its graph ~5x faster than dynamo, and
# onnxruntime (the demo's back end) serves either. Other recipes keep the builder's default.
ENGINE_ARGS ?= $(if $(filter build/demo.toml,$(RECIPE)),--exporter torchscript)

engines: $(STAMP)
	$(BIN)/griffin-trt build --recipe $(RECIPE) $(ENGINE_ARGS) $(ARGS)

generate: $(STAMP)
	$(BIN)/griffin-trt generate --recipe $(RECIPE) $(ARGS)

serve: $(STAMP)
	$(BIN)/griffin-trt serve --recipe $(RECIPE) $(ARGS)

bench: $(STAMP)
	$(BIN)/griffin-trt bench --recipe $(RECIPE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(ARGS)

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "gpu or tensorrt" $(ARGS)

clean:
	rm -rf engines .pytest_cache
