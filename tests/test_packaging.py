"""Packaging: one distribution that is also a ROS 2 ament_python package, a working console script, CPU torch."""

import configparser
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "irevla"
    assert root.find("export/build_type").text == "ament_python"
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(REPO / "setup.cfg")
    assert root.findtext("version") == setup_cfg["metadata"]["version"]
    # ament conventions: node executables land in lib/<package>, where `ros2 run` looks for them.
    assert setup_cfg["develop"]["script_dir"] == "$base/lib/irevla"
    assert setup_cfg["install"]["install_scripts"] == "$base/lib/irevla"
    assert (REPO / "resource" / "irevla").is_file()
    setup_py = (REPO / "setup.py").read_text()
    for target in ("share/ament_index/resource_index/packages", "share/{PACKAGE}/launch", "share/{PACKAGE}/config"):
        assert target in setup_py


def test_console_script_runs_and_explains_itself():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")
                    if ep.dist and ep.dist.name == "irevla"} if sys.version_info >= (3, 10) else {}
    assert entry_points.get("irevla") == "irevla.cli:main"
    out = subprocess.run([sys.executable, "-m", "irevla", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "demos", "data", "sim"):
        assert command in out.stdout
    sub = subprocess.run([sys.executable, "-m", "irevla", "demos", "sim", "--help"], capture_output=True, text=True,
                         check=True)
    assert "--episodes" in sub.stdout and "--keep-failures" in sub.stdout


def test_cpu_torch_without_cuda_packages_or_torchvision():
    import torch

    installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
    assert "torchvision" not in installed  # its wheel drags a CUDA torch in over the CPU one
    cuda_wheels = [name for name in installed if name.startswith("nvidia-")]
    if os.environ.get("CI") or "+cpu" in torch.__version__:
        # CI machines have no GPU: `make` must have installed the CPU build and nothing of CUDA's.
        assert torch.version.cuda is None, f"CUDA torch {torch.__version__} installed on a CPU machine"
        assert not cuda_wheels, f"CUDA wheels installed on a CPU machine: {cuda_wheels}"
