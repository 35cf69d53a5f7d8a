"""Camera video for a LeRobot export: demos rendered from their saved states into LeRobot's chunked MP4 files.

Each frame restores the MuJoCo state saved before an action (``mj_setState``) and renders the env's camera
offscreen, as ``robot-rl data render`` does, so frame t shows the scene that observation t describes. Frames go
through imageio-ffmpeg (the encoder of ``data render`` and ``eval --video``): H.264, yuv420p, a keyframe every 2
frames (LeRobot encodes with ``g=2`` too, for quick random access while training), many episodes per file; an
episode is the interval [from_timestamp, to_timestamp) of its file. LeRobot decodes H.264 as well as its default
AV1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from robot_rl.data.dataset import Demo
from robot_rl.data.lerobot_format import VIDEO_FILE_MB, VIDEO_PATH, chunk_file, image_stats, pixel_histogram

CRF = 23
"""x264's constant rate factor (its default; lower is better quality and larger files)."""
GOP = 2
"""Frames between keyframes."""


class EpisodeVideos:
    """Render demos into ``videos/<key>/chunk-*/file-*.mp4`` under ``root``, one episode after another.

    Args:
        root: The dataset folder being written.
        env_id: The demos' env id.
        env_kwargs: Its keyword arguments (render size and mode are set here).
        fps: Frames per second (the dataset's).
        width: Frame width [px]; None: the env's default.
        height: Frame height [px]; None: the env's default.

    Raises:
        ValueError: an odd width or height (yuv420p needs even sizes).
    """

    def __init__(
        self,
        root: Path,
        env_id: str,
        env_kwargs: dict[str, Any],
        fps: int,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        from robot_rl.envs.registry import make

        for name, value in (("width", width), ("height", height)):
            if value is not None and (value < 16 or value % 2):
                raise ValueError(f"`{name}` must be an even number of pixels >= 16 (H.264 in yuv420p). Got {value}.")
        kwargs = {k: v for k, v in env_kwargs.items() if k not in ("render_mode", "width", "height")}
        size = {k: v for k, v in (("width", width), ("height", height)) if v is not None}
        self.env = make(env_id, **kwargs, **size, render_mode="rgb_array")
        self.camera = str(kwargs.get("camera") or getattr(self.env.unwrapped, "_camera", "camera"))
        self.key = f"observation.images.{self.camera}"
        self.root = root
        self.fps = fps
        self.histogram = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0
        self.shape: tuple[int, int, int] | None = None
        self._file_number = 0
        self._seconds = 0.0
        self._writer: Any = None
        self._path: Path | None = None

    def feature(self) -> dict[str, Any]:
        """The ``info.json`` feature of the camera, with the ``info`` LeRobot reads from the first video."""
        assert self.shape is not None, "feature() after the first episode"
        height, width, channels = self.shape
        return {
            "dtype": "video",
            "shape": [height, width, channels],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": height,
                "video.width": width,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": channels,
                "has_audio": False,
            },
        }

    def _frame(self, state: np.ndarray) -> np.ndarray:
        unwrapped = self.env.unwrapped
        mujoco.mj_setState(unwrapped.model, unwrapped.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(unwrapped.model, unwrapped.data)
        try:
            return self.env.render()
        except Exception as err:  # noqa: BLE001 - GL setup errors vary by backend
            raise RuntimeError(
                f"offscreen rendering failed ({err}). Set MUJOCO_GL=osmesa (CPU) or egl before starting Python, or "
                "export without --video."
            ) from None

    def _open(self, shape: tuple[int, int, int]) -> None:
        import imageio_ffmpeg

        self._path = self.root / VIDEO_PATH.format(video_key=self.key, **chunk_file(self._file_number))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio_ffmpeg.write_frames(
            str(self._path),
            (shape[1], shape[0]),
            fps=self.fps,
            codec="libx264",
            quality=None,
            macro_block_size=1,
            output_params=["-crf", str(CRF), "-g", str(GOP)],
            ffmpeg_log_level="error",
        )
        self._writer.send(None)
        self._seconds = 0.0

    def add(self, demo: Demo, where: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """Render and encode one demo.

        Args:
            demo: The demo (its ``states`` and ``seed``).
            where: The file, for errors.

        Returns:
            (the episode's ``videos/<key>/...`` columns, its image statistics).

        Raises:
            ValueError: the demo has no simulator states (recorded on a robot or converted from a bag).
        """
        if demo.states.ndim != 2 or demo.states.shape[1] == 0:
            raise ValueError(
                f"{where}: {demo.name} has no simulator states (recorded on a robot or converted with `robot-rl data "
                "from-bag`), so it cannot be rendered; export without --video."
            )
        self.env.reset(seed=demo.seed)  # the goal marker and the randomized model parameters
        histogram = np.zeros((3, 256), dtype=np.int64)
        for state in demo.states:
            frame = np.ascontiguousarray(self._frame(state))
            if self._writer is None:
                self.shape = tuple(frame.shape)  # type: ignore[assignment]
                self._open(frame.shape)
            self._writer.send(frame)
            histogram += pixel_histogram(frame[None])
        start = self._seconds
        self._seconds += demo.num_samples / self.fps
        place = chunk_file(self._file_number)
        columns = {
            f"videos/{self.key}/chunk_index": place["chunk_index"],
            f"videos/{self.key}/file_index": place["file_index"],
            f"videos/{self.key}/from_timestamp": start,
            f"videos/{self.key}/to_timestamp": self._seconds,
        }
        self.histogram += histogram
        self.frames += demo.num_samples
        assert self._path is not None
        if self._path.stat().st_size >= VIDEO_FILE_MB * 1024 * 1024:
            self._close_file()
            self._file_number += 1
        return columns, image_stats(histogram, demo.num_samples)

    def stats(self) -> dict[str, list[Any]]:
        """The camera's statistics over every frame rendered."""
        return image_stats(self.histogram, self.frames)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        """Finish the open video file and release the renderer."""
        try:
            self._close_file()
        finally:
            self.env.close()
