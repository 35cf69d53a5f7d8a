"""The MCAP file under :class:`robot_rl.data.mcap_log.RolloutLog`: typed channels, error tolerance, JSON.

:data:`TOPICS` names every channel with its schema; the protobuf schemas are Foxglove's own
(``foxglove-schemas-protobuf``, stored as a FileDescriptorSet), the JSON ones (:data:`JSON_SCHEMAS`) are
JSON Schemas written here. :class:`McapFile` registers a channel with its first message and turns itself off
on the first OS error (a file that cannot be created, a full disk) with one warning line, never a raise: a
log never stops the run it records. A file cut short that way can be salvaged with ``mcap recover``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

_NUM = {"type": ["number", "null"]}
_VEC = {"type": "array", "items": _NUM}
_STR = {"type": ["string", "null"]}
_STRS = {"type": "array", "items": {"type": "string"}}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}


def _object(properties: dict[str, Any], description: str, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": extra,
    }


_STEP = {"episode": _INT, "step": _INT}
_FILTER = _object(
    {"name": {"type": "string"}, "changed": _BOOL, "active": _STRS, "fallback": _STR, "max_change": _NUM,
     "detail": {"type": "object", "additionalProperties": _NUM}},
    "One filter's report: binding constraints, fallback, largest change of a command entry.",
)  # fmt: skip
JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    "robot_rl.Action": _object(
        {
            **_STEP,
            "policy": _VEC,
            "command": _VEC,
            "changed": _BOOL,
            "max_change": _NUM,
            "controller": {"type": ["object", "null"], "additionalProperties": True},
            "human": {"type": ["boolean", "null"]},
        },
        "The policy's action (before the safety chain) and the command sent, action units; max_change = "
        "max |command - policy|.",
    ),  # fmt: skip
    "robot_rl.Goal": _object(
        {**_STEP, "desired": _VEC, "achieved": _VEC, "distance": _NUM, "reward": _NUM, "return": _NUM},
        "Desired and achieved goal [m; world], their distance [m], the step's reward and the return so far.",
    ),
    "robot_rl.Safety": _object(
        {
            **_STEP,
            "chain": _BOOL,
            "changed": _BOOL,
            "fallback": _STR,
            "active": _STRS,
            "max_change": _NUM,
            "filters": {"type": "array", "items": _FILTER},
            "watchdog": {"type": ["object", "null"], "additionalProperties": True},
            "estop": _object({"latched": _BOOL, "reason": _STR}, "The e-stop latch."),
            "chunk": {"type": ["object", "null"], "properties": {"ok": _BOOL, "summary": {"type": "string"}}},
            "violations": _STRS,
        },
        "The safety chain on one command (chain false: off) and the constraints the state breaks (violations).",
    ),  # fmt: skip
    "robot_rl.Monitor": _object(
        {
            **_STEP,
            "detector": _STR,
            "rule": _STR,
            "alarm": _BOOL,
            "scores": {"type": "object", "additionalProperties": _NUM},
            "windowed": {"type": "object", "additionalProperties": _NUM},
            "thresholds": {"type": "object", "additionalProperties": _NUM},
            "over": {"type": "object", "additionalProperties": _BOOL},
            "goal_distance": _NUM,
            "consistency": _NUM,
        },
        "The failure monitor at a new chunk: raw and windowed scores, their thresholds (null: never alarms).",
    ),  # fmt: skip
    "robot_rl.Episode": _object(
        {"episode": _INT, "seed": {"type": ["integer", "null"]}, "success": _BOOL, "return": _NUM, "length": _INT},
        "One finished episode (the eval report's per_episode entry).",
        extra=True,
    ),
    "robot_rl.Info": _object({}, "What ran: env, policy, safety, monitor, control period.", extra=True),
}
"""The JSON Schemas of the ``robot_rl.*`` channels."""

TOPICS: dict[str, tuple[str, str]] = {
    "/scene": ("foxglove.SceneUpdate", "protobuf"),
    "/tf": ("foxglove.FrameTransforms", "protobuf"),
    "/robot_rl/action": ("robot_rl.Action", "json"),
    "/robot_rl/goal": ("robot_rl.Goal", "json"),
    "/robot_rl/safety": ("robot_rl.Safety", "json"),
    "/robot_rl/monitor": ("robot_rl.Monitor", "json"),
    "/robot_rl/episode": ("robot_rl.Episode", "json"),
    "/robot_rl/events": ("foxglove.Log", "protobuf"),
    "/robot_rl/info": ("robot_rl.Info", "json"),
}
"""Topic -> (schema name, message encoding)."""

INFO, WARNING, ERROR = 2, 3, 4
"""``foxglove.Log`` levels."""


def dumps(message: Mapping[str, Any]) -> bytes:
    """Compact JSON of ``message``; NaN and infinities are written as null (JSON has neither).

    orjson: some 20 times faster than the standard library on these messages, which are mostly floats (an
    eval step writes three); the log of an evaluation must cost the evaluation little (docs/observability.md).
    """
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)


def _descriptor_set(message_class: Any) -> bytes:
    """The FileDescriptorSet of a protobuf class with every file it imports (what Foxglove decodes with)."""
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    files = FileDescriptorSet()
    seen: set[str] = set()

    def add(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(files.file.add())

    add(message_class.DESCRIPTOR.file)
    return files.SerializeToString()


def protobuf_class(name: str) -> Any:
    """The protobuf class of a Foxglove schema (``foxglove.Log`` -> ``foxglove_schemas_protobuf.Log_pb2.Log``)."""
    import importlib

    short = name.split(".")[-1]
    return getattr(importlib.import_module(f"foxglove_schemas_protobuf.{short}_pb2"), short)


def _why(path: Path, err: OSError) -> str:
    """What stopped ``path`` from being created, in words."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if isinstance(err, PermissionError):
        return f"permission denied in {folder}"
    return err.strerror or str(err)


def warn_stderr(message: str) -> None:
    """The default warning: one line on stderr."""
    print(f"robot-rl: warning: {message}", file=sys.stderr, flush=True)


class McapFile:
    """An MCAP file of typed channels that turns itself off on the first OS error (one warning, never a raise).

    Args:
        path: The file to write (its missing parent folders are created).
        label: How the warning names the file (``--log FILE``); default the path.
        warn: Called with the one warning line (default: stderr).
    """

    def __init__(self, path: str | Path, label: str | None = None, warn: Callable[[str], None] | None = None) -> None:
        from mcap.writer import CompressionType, Writer

        import robot_rl

        self.path = Path(path)
        self.label = label or str(self.path)
        self.error: str | None = None
        """Why the log stopped (None while it works)."""
        self.counts: dict[str, int] = {}
        """Messages written per topic."""
        self._warn = warn or warn_stderr
        self._channels: dict[str, int] = {}
        self._stream: IO[bytes] | None = None
        self._writer: Any = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
            self._writer.start(profile="", library=f"robot_rl {robot_rl.__version__}")
        except OSError as err:
            self.fail(f"cannot be written ({_why(self.path, err)})")

    @property
    def enabled(self) -> bool:
        """Still writing."""
        return self._writer is not None

    def _fail(self, err: OSError, what: str) -> None:
        self.fail(f"{what} ({err.strerror or err})")

    def fail(self, reason: str) -> None:
        """Turn the log off with one warning line (``reason``: what went wrong)."""
        if self.error is not None:
            return
        self.error = f"{self.label}: {reason}"
        self._warn(f"{self.error}; the log is off and the run goes on.")
        stream, self._writer, self._stream = self._stream, None, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass

    def _channel(self, topic: str) -> int:
        schema_name, encoding = TOPICS[topic]
        if encoding == "json":
            schema_id = self._writer.register_schema(
                schema_name, "jsonschema", json.dumps(JSON_SCHEMAS[schema_name]).encode()
            )
        else:
            schema_id = self._writer.register_schema(
                schema_name, "protobuf", _descriptor_set(protobuf_class(schema_name))
            )
        channel = self._writer.register_channel(topic, encoding, schema_id)
        self._channels[topic] = channel
        self.counts[topic] = 0
        return channel

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        """One message on ``topic`` (one of :data:`TOPICS`) at ``stamp_ns`` [ns]; nothing once the log is off."""
        if self._writer is None:
            return
        try:
            channel = self._channels.get(topic)
            if channel is None:
                channel = self._channel(topic)
            count = self.counts[topic]
            self._writer.add_message(channel, stamp_ns, data, stamp_ns, count)
            self.counts[topic] = count + 1
        except OSError as err:
            self._fail(err, "write failed, the file is incomplete")

    def close(self) -> None:
        """Write the summary and close the file (idempotent)."""
        if self._writer is None:
            return
        try:
            self._writer.finish()
            assert self._stream is not None
            self._stream.close()
        except OSError as err:
            self._fail(err, "closing failed, the file is incomplete")
            return
        self._writer = self._stream = None
