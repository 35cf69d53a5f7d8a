"""Running exported policies without ROS: the ONNX policy and the control step around it."""

from __future__ import annotations

from robot_rl.runtime.controller import (
    BLEND_MODES,
    ActionFilter,
    Controller,
    ControllerConfig,
    ControlOutput,
    ControlStatus,
    Monitor,
)
from robot_rl.runtime.onnx_policy import OnnxPolicy, PolicyIntegrityError

__all__ = [
    "BLEND_MODES",
    "ActionFilter",
    "ControlOutput",
    "ControlStatus",
    "Controller",
    "ControllerConfig",
    "Monitor",
    "OnnxPolicy",
    "PolicyIntegrityError",
]
