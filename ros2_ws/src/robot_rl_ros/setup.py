"""ament_python package: `colcon build` on a robot, or `pip install -e ros2_ws/src/robot_rl_ros` for development."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robot_rl_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="robot_rl maintainers",
    maintainer_email="robot-rl@example.com",
    description="ROS 2 nodes for robot_rl policies (policy node, robot adapters, sim bridge, teleop, recorder).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"policy_node = {PACKAGE}.policy_node:main",
            f"sim_bridge = {PACKAGE}.sim_bridge:main",
            f"teleop_node = {PACKAGE}.teleop_node:main",
            f"bag_recorder = {PACKAGE}.recorder:main",
        ],
    },
)
