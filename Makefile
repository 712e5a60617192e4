# eca-deploy: set-up, the CPU demo and the tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# Jetson / machines with their own PyTorch: make demo VENV_FLAGS=--system-site-packages
VENV_FLAGS ?=
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
OUT ?= out
MODEL ?= eca_mobilenetv2

.PHONY: setup demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first and pinned (an unpinned torch is a multi-GB CUDA build); an existing torch is kept.
# ONNX Runtime: the CPU wheel only when no onnxruntime / onnxruntime-gpu is importable. OpenVINO: the CPU runtime
# and the headers/CMake config its ECA extension builds against, built into build/openvino (the tests build their own).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q -e ".[dev,openvino]"
	$(BIN)/python -c "import onnxruntime" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[cpu]"
	$(BIN)/eca-deploy plugin build --target openvino >/dev/null \
		|| echo "note: OpenVINO ECA extension not built (needs cmake and a C++ compiler); fused models skip OpenVINO"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/eca-deploy deploy --model $(MODEL) --out $(OUT)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(OUT) build .pytest_cache
