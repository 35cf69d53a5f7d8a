"""Demonstration data: the robomimic HDF5 layout, a crash-safe recorder, reading, replay, collection.

Entry points (what ``robot-rl collect`` and ``robot-rl data`` call):

- :func:`collect`: record demos from the expert or a registered teleop source.
- :func:`info` / :func:`format_info`: episodes, steps, success rate, per-key shapes and ranges.
- :func:`replay` / :func:`format_replay`: re-simulate demos and report the deviation from the file.
- :func:`render`: MP4 of demos from their saved states.
- :func:`check` / :func:`format_check`: every dataset against its checksum and for finite numbers.
- :func:`merge`: combine files of the same env into a new one (checked, checksummed, no duplicates).
- :func:`split`: robomimic ``mask/train`` and ``mask/valid``.
"""

from robot_rl.data.check import check, format_check
from robot_rl.data.collect import ActionSource, EpisodeEvent, PolicySource, collect, register_source
from robot_rl.data.dataset import Demo, DemoDataset, format_info, info
from robot_rl.data.merge import merge, merge_files, split
from robot_rl.data.recorder import DemoRecorder, mujoco_state
from robot_rl.data.replay import format_replay, render, replay
from robot_rl.data.schema import DatasetError

__all__ = [
    "ActionSource",
    "DatasetError",
    "Demo",
    "DemoDataset",
    "DemoRecorder",
    "EpisodeEvent",
    "PolicySource",
    "check",
    "collect",
    "format_check",
    "format_info",
    "format_replay",
    "info",
    "merge",
    "merge_files",
    "mujoco_state",
    "register_source",
    "render",
    "replay",
    "split",
]
