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

.PHONY: venv engines generate serve bench test test-gpu demo-pair smollm2-drafter device-wheels device-check clean help

help:
	@echo "make engines  [RECIPE=build/demo.toml]  build graphs/engines + filled triton_repo"
	@echo "make test                               run the test suite (CPU)"
	@echo "make serve    [RECIPE=...]              start tritonserver on the built repository"
	@echo "make bench    [RECIPE=...] [ARGS=...]   gRPC benchmark: GRIFFIN vs plain decoding"
	@echo "make generate [ARGS='--prompt ...']     one generation from the command line"
	@echo "make demo-pair [ARGS='--out DIR']       remake the demo pair from scratch (~1 h on 2 CPU cores)"
	@echo "make smollm2-drafter [WORK=DIR]         retrain drafters/smollm2-135m-instruct (~1 h on 2 CPU cores)"
	@echo "make device-wheels                      download the wheels the GPU host lacks into .whl/"
	@echo "make device-check [OUT=out/device-check] GPU tests + benchmarks, one JSON + markdown (CPU: small shapes)"

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

engines: $(STAMP)
	$(BIN)/griffin-trt build --recipe $(RECIPE) $(ARGS)

generate: $(STAMP)
	$(BIN)/griffin-trt generate --recipe $(RECIPE) $(ARGS)

serve: $(STAMP)
	$(BIN)/griffin-trt serve --recipe $(RECIPE) $(ARGS)

bench: $(STAMP)
	$(BIN)/griffin-trt bench --recipe $(RECIPE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(ARGS)

# Rewrites griffin_trt/demo/{target,drafter,README.md} unless ARGS names another --out; resumable.
demo-pair: $(STAMP)
	$(BIN)/python scripts/train_demo.py $(ARGS)

# Rewrites drafters/smollm2-135m-instruct (fetches the target first); resumable from WORK.
WORK ?= .cache/train/smollm2-135m-instruct
smollm2-drafter: $(STAMP)
	$(BIN)/python scripts/train_smollm2.py --work $(WORK) $(ARGS)

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "gpu or tensorrt" $(ARGS)

# GPU host (see README "GPU host"): it has torch, triton, numpy 2 and transformers but no internet.
# device-wheels runs here (pip works here), device-check there, with .whl/ carried along.
WHEEL_DIR := .whl
OUT ?= out/device-check
DEVICE_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
DEVICE_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(p)_x86_64)

device-wheels:
	mkdir -p $(WHEEL_DIR)
	$(DEVICE_PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(DEVICE_PLATFORMS) -d $(WHEEL_DIR) -r scripts/device_wheels.txt
	@$(DEVICE_PY) -c "import pathlib,sys; n=sum(f.stat().st_size for f in pathlib.Path('$(WHEEL_DIR)').glob('*.whl')); \
	  print(f'$(WHEEL_DIR): {n/1e6:.1f} MB of wheels'); sys.exit('over the 60 MB to carry' if n > 60e6 else 0)"

device-check:
	$(DEVICE_PY) scripts/device_check.py $(OUT) $(ARGS)

clean:
	rm -rf engines .pytest_cache
