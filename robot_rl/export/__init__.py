"""Export of whole policies to ONNX, and the policy card (metadata.json) schema.

``robot_rl.export.metadata`` imports without torch (the runtime reads cards); the exporter loads
torch and onnx on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from robot_rl.export.metadata import (
    ACTIONS_OUTPUT,
    NOISE_INPUT,
    OBS_INPUT,
    PolicyFormatError,
    PolicyMetadata,
    is_policy_dir,
    read_metadata,
)

_LAZY = {
    "OPSET": "robot_rl.export.onnx_export",
    "ExportError": "robot_rl.export.onnx_export",
    "export_run": "robot_rl.export.onnx_export",
}

__all__ = [
    "ACTIONS_OUTPUT",
    "NOISE_INPUT",
    "OBS_INPUT",
    "PolicyFormatError",
    "PolicyMetadata",
    "is_policy_dir",
    "read_metadata",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robot_rl.export' has no attribute {name!r}")
