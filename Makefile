# irevla — two commands on a fresh machine:
#   make demo   install what the demo needs, then run it on the simulation (the embedded default)
#   make test   install everything the tests need, then run them
# Everything goes into a project-local virtual environment ($(VENV)); nothing is installed system-wide except the
# Debian libraries for headless rendering and USB cameras (only when run as root; otherwise the apt command is printed).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# This pin takes the local CPU wheel on a CPU box; on a GPU host the same pin installs the normal CUDA build.
TORCH  ?= torch==2.13.0
DEMO_EXTRAS ?= sim,policy,learner
TEST_EXTRAS ?= sim,policy,learner,robot,calibration,dev
APT_PACKAGES := libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6 libusb-1.0-0
PYTEST_ARGS ?=

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test system-deps venv-demo venv-test bench lint clean help

help:
	@echo "make demo   - install (sim + policy + learner extras) and run the whole iRe-VLA loop in simulation"
	@echo "make test   - install (all extras + dev) and run the test suite"
	@echo "make bench  - run the benchmarks in bench/ (JSON in bench/results/)"

demo: system-deps venv-demo
	$(VENV)/bin/irevla demo --config config/demo.yaml

test: system-deps venv-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: system-deps venv-test
	$(PY) bench/bench_sim.py
	$(PY) bench/bench_dataset.py
	$(PY) bench/bench_robot.py
	$(PY) bench/bench_policy.py
	$(PY) bench/bench_learner.py

lint: venv-test
	$(VENV)/bin/ruff check irevla tests bench

# Headless MuJoCo rendering needs EGL (or OSMesa); pyrealsense2 needs libusb-1.0; `python3 -m venv` needs python3-venv
# on Debian/Ubuntu. On a system without dpkg we cannot check: say so and go on.
system-deps:
	@if ! command -v dpkg-query >/dev/null; then \
		echo "note: not a Debian-based system; make sure EGL (or OSMesa) and libusb-1.0 are installed"; exit 0; fi; \
	missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system libraries:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "missing system libraries:$$missing"; \
		echo "install them with:  sudo apt-get install -y$$missing"; exit 1; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Torch first, pinned, so that no later requirement can pull a multi-GB CUDA build onto a CPU machine.
$(VENV)/.torch: | $(PY)
	$(PIP) install -q "$(TORCH)"
	@touch $@

$(VENV)/.demo-installed: setup.cfg setup.py $(VENV)/.torch
	$(PIP) install -q -e ".[$(DEMO_EXTRAS)]"
	@touch $@

$(VENV)/.test-installed: setup.cfg setup.py $(VENV)/.torch
	$(PIP) install -q -e ".[$(TEST_EXTRAS)]"
	@touch $@ $(VENV)/.demo-installed

venv-demo: $(VENV)/.demo-installed
venv-test: $(VENV)/.test-installed

# Leaves runs/ (recorded data, checkpoints) alone: delete experiments by hand, never by accident.
clean:
	rm -rf $(VENV) build *.egg-info bench/results .pytest_cache
