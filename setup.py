"""setuptools entry point; metadata lives in setup.cfg. data_files make this a valid ROS 2 ament_python package."""

from glob import glob

from setuptools import setup

PACKAGE = "irevla"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
)
