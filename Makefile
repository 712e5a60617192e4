# eca-deploy: set-up, the CPU demo and the tests. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
# Jetson / machines with their own PyTorch: make demo VENV_FLAGS=--system-site-packages
VENV_FLAGS ?=
# make demo: a small CPU torch, no torchvision (the zoo needs neither torchvision nor timm).
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
# make test: timm's models too. timm imports torchvision, which must be built for the same torch, so the
# tests take a torch/torchvision pair released together (see README: Install).
TEST_VENV ?= .venv-test
TEST_TORCH_VERSION ?= 2.14.1
TEST_TORCHVISION_VERSION ?= 0.29.1
# PyTorch's own CPU wheels (small). Where that index is unreachable, the plain package name is used instead:
# on PyPI for Linux x86-64 that is the CUDA build (gigabytes, still runs on a CPU).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
TEST_BIN := $(TEST_VENV)/bin
OUT ?= out
MODEL ?= eca_mobilenetv2

.PHONY: setup setup-test demo test test-all lint clean

# The pip arguments that install PyTorch packages: CPU index when reachable, else the plain name.
torch_source = $(shell $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=5)" \
	>/dev/null 2>&1 && echo "--index-url $(TORCH_INDEX)")

# uv installs the packages where it can be installed (scripts/pip_install.py: several times faster than pip for
# torch's gigabytes, with pip's own configuration); pip does it otherwise.
%/bin/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $*
	$*/bin/python -m pip install -q --upgrade pip
	$*/bin/python -m pip install -q uv || echo "note: uv not installed; pip installs the packages (slower)"

# torch first and pinned (an unpinned torch is a multi-GB CUDA build); an existing torch is kept.
# ONNX Runtime: the CPU wheel only when no onnxruntime / onnxruntime-gpu is importable. OpenVINO: the CPU runtime
# and the headers/CMake config its ECA extension builds against, built into build/openvino (the tests build their own).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || { \
	  echo "pip install $(torch_source) torch==$(TORCH_VERSION)"; \
	  $(BIN)/python scripts/pip_install.py -q $(torch_source) "torch==$(TORCH_VERSION)"; }
	$(BIN)/python scripts/pip_install.py -q -e ".[dev,openvino]"
	$(BIN)/python -c "import onnxruntime" 2>/dev/null || $(BIN)/python scripts/pip_install.py -q -e ".[cpu]"
	$(BIN)/eca-deploy plugin build --target openvino >/dev/null \
		|| echo "note: OpenVINO ECA extension not built (needs cmake and a C++ compiler); fused models skip OpenVINO"
	touch $@

# The test venv: the matched torch + torchvision pair unless both import, then timm and ultralytics with the
# installed torch/torchvision pinned by a constraints file, so that pip can never swap them for other builds, in one
# pip run with ONNX Runtime's CPU wheel unless an onnxruntime / onnxruntime-gpu already imports.
# ultralytics pulls opencv-python beside the headless build eca-deploy uses: both install the one `cv2`
# module, so the headless build's files are put back when cv2 no longer imports.
$(TEST_VENV)/.installed: $(TEST_BIN)/python pyproject.toml
	@$(TEST_BIN)/python -c "import torch, torchvision" 2>/dev/null || { \
	  echo "pip install $(torch_source) torch==$(TEST_TORCH_VERSION) torchvision==$(TEST_TORCHVISION_VERSION)"; \
	  $(TEST_BIN)/python scripts/pip_install.py -q $(torch_source) \
	    "torch==$(TEST_TORCH_VERSION)" "torchvision==$(TEST_TORCHVISION_VERSION)"; }
	$(TEST_BIN)/python -c "from importlib.metadata import version as v; print(*(f'{p}=={v(p)}' for p in ('torch', 'torchvision')), sep='\n')" \
	  > $(TEST_VENV)/torch-constraints.txt
	$(TEST_BIN)/python scripts/pip_install.py -q -c $(TEST_VENV)/torch-constraints.txt \
	  -e ".[dev,timm,openvino,ultralytics$$($(TEST_BIN)/python -c "import onnxruntime" 2>/dev/null || echo ,cpu)]"
	$(TEST_BIN)/python -c "import cv2" 2>/dev/null || $(TEST_BIN)/python scripts/pip_install.py -q --force-reinstall --no-deps \
	  "opencv-python-headless==$$($(TEST_BIN)/python -c "from importlib.metadata import version; print(version('opencv-python-headless'))")"
	touch $@

setup: $(VENV)/.installed

setup-test: $(TEST_VENV)/.installed

demo: setup
	$(BIN)/eca-deploy deploy --model $(MODEL) --out $(OUT)

# make test: every test but those marked slow (ResNet-34 and the largest ResNets, CUDA compiles for every architecture,
# the host runs of the CUDA kernels, timm's model family), to keep CI's whole run short on 2 cores; make test-all: all.
# The tests' xdist units and their order: tests/conftest.py.
test: setup-test
	$(TEST_BIN)/ruff check .
	$(TEST_BIN)/python -m pytest -n 2 -q --durations=25 -m "not slow"

test-all: setup-test
	$(TEST_BIN)/ruff check .
	$(TEST_BIN)/python -m pytest -n 2 -q --durations=25

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(OUT) build .pytest_cache
