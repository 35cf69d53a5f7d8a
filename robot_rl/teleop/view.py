"""Live view of a running rollout: a passive MuJoCo viewer, or a one-line text status.

Where a display exists (``DISPLAY`` is set and the viewer opens) :class:`LiveView` shows the env in
MuJoCo's passive viewer, synced after each step. Otherwise (over SSH, in a container, or when the
window is closed) it redraws one status line in place on stderr::

    [keyboard] episode 2 | step 37 | REC | dist 0.041 m | saved 1 discarded 1 | success False

The teleoperation session, ``robot-rl collect`` with a device and ``robot-rl eval --takeover``
share it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO


class LiveView:
    """Shows a rollout as it runs.

    Args:
        label: Shown in brackets at the start of the status line (the device, e.g. ``keyboard``).
        env: The env to show; can also be given later with :meth:`attach`.
        viewer: Open a MuJoCo viewer when a display exists (False: always the status line).
        stream: Where the status line goes (default: stderr).
    """

    def __init__(self, label: str, env: Any = None, viewer: bool = True, stream: TextIO | None = None) -> None:
        self.label = label
        self.want_viewer = viewer
        self.stream = stream or sys.stderr
        self._viewer: Any = None
        self._drawn = False
        if env is not None:
            self.attach(env)

    @property
    def viewer_open(self) -> bool:
        """True while the MuJoCo viewer shows the env."""
        return self._viewer is not None

    def attach(self, env: Any) -> None:
        """Show ``env``: opens the MuJoCo viewer on its model and data when a display exists."""
        self.close_viewer()
        if not (self.want_viewer and os.environ.get("DISPLAY")):
            return
        try:
            import mujoco.viewer

            self._viewer = mujoco.viewer.launch_passive(env.unwrapped.model, env.unwrapped.data)
        except Exception as err:  # noqa: BLE001 - no usable display: fall back to the status line
            print(f"live view unavailable ({err}); showing a status line instead.", file=self.stream)

    def show(
        self,
        episode: int,
        step: int,
        mode: str,
        info: Mapping[str, Any],
        saved: int | None = None,
        discarded: int | None = None,
    ) -> None:
        """Draw the current step: sync the viewer, or redraw the status line.

        Args:
            episode: Episode index.
            step: Steps in this episode.
            mode: What is acting or recording: ``REC``, ``idle ...``, ``POLICY``, ``HUMAN``.
            info: The env's last step info (``distance`` [m] and ``is_success`` are shown).
            saved: Episodes kept so far (omitted when None).
            discarded: Episodes dropped so far (omitted when None).
        """
        if self._viewer is not None:
            if self._viewer.is_running():
                self._viewer.sync()
                return
            self.close_viewer()  # the window was closed: keep going with the status line
        self.stream.write(status_line(self.label, episode, step, mode, info, saved, discarded))
        self.stream.flush()
        self._drawn = True

    def close_viewer(self) -> None:
        """Close the MuJoCo viewer (if open)."""
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None

    def close(self) -> None:
        """Close the viewer and end the status line."""
        self.close_viewer()
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def status_line(
    label: str,
    episode: int,
    step: int,
    mode: str,
    info: Mapping[str, Any],
    saved: int | None = None,
    discarded: int | None = None,
) -> str:
    """The status line, starting with a carriage return so it overwrites the previous one."""
    distance = info.get("distance")
    dist = f" | dist {distance:.3f} m" if distance is not None else ""
    counts = f" | saved {saved}" if saved is not None else ""
    counts += f" discarded {discarded}" if discarded is not None else ""
    success = bool(info.get("is_success", 0.0))
    return f"\r[{label}] episode {episode} | step {step} | {mode}{dist}{counts} | success {success}   "
