"""Running exported policies without ROS: the ONNX policy (the control loop comes later)."""

from __future__ import annotations

from robot_rl.runtime.onnx_policy import OnnxPolicy, PolicyIntegrityError

__all__ = ["OnnxPolicy", "PolicyIntegrityError"]
