"""``robot-rl eval --log FILE.mcap`` and ``robot-rl data view``: read back with an independent reader.

The files are read with the ``mcap`` package's reader; protobuf messages are decoded with classes built from
the FileDescriptorSet stored in the file (not from robot_rl's or Foxglove's Python classes), JSON messages with
``json`` and checked against the JSON Schema stored beside them (a small validator of the keywords we use).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from mcap.reader import make_reader

from robot_rl.cli.main import run
from robot_rl.data.collect import collect
from robot_rl.data.dataset import DemoDataset
from robot_rl.data.mcap_view import demos_to_mcap
from robot_rl.evaluation.evaluate import EvalConfig, evaluate

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "panda_push_diffusion"
PER_STEP = ("/robot_rl/action", "/robot_rl/safety", "/robot_rl/goal")


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    """``value`` against the JSON Schema keywords the log uses (type, properties, additionalProperties, items)."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        python = {
            "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
            "integer": int, "number": (int, float),
        }  # fmt: skip
        ok = any(isinstance(value, python[k]) and not (k in ("integer", "number") and value is True) for k in kinds)
        ok = ok and not (isinstance(value, bool) and "boolean" not in kinds)
        assert ok, f"{where}: {value!r} is not of type {kinds}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _check(item, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                _check(item, extra, f"{where}.{key}")
            else:
                assert extra is not False, f"{where}: unexpected key {key!r}"
        for key in properties:
            assert key in value or schema.get("additionalProperties") is True, f"{where}: missing {key!r}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def _protobuf_class(schema: Any) -> Any:
    """A message class from the FileDescriptorSet in the file (independent of any installed schema package)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def read_mcap(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every message decoded, per topic, as ``(log_time, message)``; checks that every channel is typed."""
    with path.open("rb") as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        assert summary is not None, f"{path}: no summary section (the file was not finished)"
        classes: dict[int, Any] = {}
        for channel in summary.channels.values():
            assert channel.schema_id != 0, f"{channel.topic} has no schema"
            schema = summary.schemas[channel.schema_id]
            if schema.encoding == "protobuf":
                assert channel.message_encoding == "protobuf"
                classes[channel.id] = _protobuf_class(schema)
            else:
                assert (schema.encoding, channel.message_encoding) == ("jsonschema", "json"), channel.topic
                classes[channel.id] = json.loads(schema.data)
        out: dict[str, list[tuple[int, Any]]] = {c.topic: [] for c in summary.channels.values()}
        for _, channel, message in reader.iter_messages(log_time_order=False):
            decoder = classes[channel.id]
            if isinstance(decoder, dict):
                value = json.loads(message.data)
                _check(value, decoder, channel.topic)
            else:
                value = decoder.FromString(message.data)
            out[channel.topic].append((message.log_time, value))
        for channel in summary.channels.values():
            assert summary.statistics.channel_message_counts[channel.id] == len(out[channel.topic])
    return out


@pytest.fixture(scope="module")
def push_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, list[tuple[int, Any]]]]:
    """Two episodes of the shipped PandaPush policy with the chain and the monitor on, logged."""
    path = tmp_path_factory.mktemp("log") / "push.mcap"
    config = EvalConfig(policy=str(POLICY), episodes=2, safety="on", monitor="on", log=path, progress=False)
    report = evaluate(config)
    return report, read_mcap(path)


class TestEvalLog:
    def test_every_expected_topic_is_there_typed(self, push_log: Any) -> None:
        report, messages = push_log
        assert report["log"].endswith("push.mcap")
        expected = {"/scene", "/tf", *PER_STEP, "/robot_rl/episode", "/robot_rl/events", "/robot_rl/info"}
        if report["monitor"].startswith("on"):
            expected.add("/robot_rl/monitor")
        assert expected <= set(messages)

    def test_message_counts_match_the_steps(self, push_log: Any) -> None:
        report, messages = push_log
        steps = sum(e["length"] for e in report["per_episode"])
        for topic in PER_STEP:
            assert len(messages[topic]) == steps, topic
        assert len(messages["/tf"]) == steps + report["episodes"]  # the reset state, then one per step
        assert len(messages["/scene"]) == report["episodes"]
        episodes = [m for _, m in messages["/robot_rl/episode"]]
        assert [e["seed"] for e in episodes] == [e["seed"] for e in report["per_episode"]]
        assert [e["success"] for e in episodes] == [e["success"] for e in report["per_episode"]]

    def test_scene_update_decodes_to_the_bodies_and_the_goal(self, push_log: Any) -> None:
        _, messages = push_log
        _, scene = messages["/scene"][0]
        ids = {entity.id for entity in scene.entities}
        assert {"static", "goal", "body/object", "body/hand", "body/link1"} <= ids
        primitives = sum(len(e.cubes) + len(e.spheres) + len(e.cylinders) for e in scene.entities)
        assert primitives > 20
        goal = next(e for e in scene.entities if e.id == "goal")
        assert goal.spheres[0].size.x == pytest.approx(0.1)  # the success radius, 0.05 m
        _, first_goal = messages["/robot_rl/goal"][0]
        assert goal.spheres[0].pose.position.x == pytest.approx(first_goal["desired"][0])

    def test_transforms_place_every_moving_body(self, push_log: Any) -> None:
        _, messages = push_log
        stamp, transforms = messages["/tf"][-1]
        frames = {t.child_frame_id for t in transforms.transforms}
        assert {"object", "hand", "left_finger", "link7"} <= frames
        for transform in transforms.transforms:
            assert transform.parent_frame_id == "world"
            assert transform.timestamp.seconds * 10**9 + transform.timestamp.nanos == stamp
            r = transform.rotation
            assert math.isclose(r.x**2 + r.y**2 + r.z**2 + r.w**2, 1.0, rel_tol=1e-9)
        # The object's last pose is where the last goal message says the object (the achieved goal) is.
        _, last_goal = messages["/robot_rl/goal"][-1]
        obj = next(t for t in transforms.transforms if t.child_frame_id == "object")
        assert [obj.translation.x, obj.translation.y] == pytest.approx(last_goal["achieved"][:2], abs=1e-9)

    def test_safety_report_and_action_agree(self, push_log: Any) -> None:
        _, messages = push_log
        actions = [m for _, m in messages["/robot_rl/action"]]
        safety = [m for _, m in messages["/robot_rl/safety"]]
        assert all(s["chain"] for s in safety)
        assert any(s["changed"] for s in safety)  # the chain acts on this policy (0.98 with it, 0.81 without)
        for action, report in zip(actions, safety, strict=True):
            change = max(abs(c - p) for c, p in zip(action["command"], action["policy"], strict=True))
            assert report["max_change"] == pytest.approx(change)
            assert action["changed"] == (change > 0.0)
            if not report["changed"]:
                assert action["command"] == action["policy"]
            assert report["filters"][0]["name"] == "franka_cbf_qp"
            assert report["watchdog"]["ok"] and not report["estop"]["latched"]

    def test_monitor_scores_with_thresholds_at_every_new_chunk(self, push_log: Any) -> None:
        report, messages = push_log
        if not report["monitor"].startswith("on"):
            pytest.fail(f"the shipped policy's monitor did not load: {report['monitor']}")
        new_chunks = sum(1 for _, a in messages["/robot_rl/action"] if a["controller"]["new_chunk"])
        scores = [m for _, m in messages["/robot_rl/monitor"]]
        assert len(scores) == new_chunks
        for score in scores:
            assert score["thresholds"]["rnd"] is not None and score["thresholds"]["entropy"] is not None
            assert score["over"]["rnd"] == (score["windowed"]["rnd"] > score["thresholds"]["rnd"])
        alarms = [e for e in report["per_episode"] if e["first_alarm_step"] is not None]
        events = [m.message for _, m in messages["/robot_rl/events"] if m.name == "monitor"]
        assert len(events) >= len(alarms)

    def test_events_mark_each_episode(self, push_log: Any) -> None:
        report, messages = push_log
        lines = [m.message for _, m in messages["/robot_rl/events"] if m.name == "episode"]
        assert len(lines) == 2 * report["episodes"]
        assert lines[0].startswith("episode 0 starts")
        assert ("success" in lines[1]) == report["per_episode"][0]["success"]

    def test_the_log_leaves_the_results_unchanged(self, push_log: Any) -> None:
        report, _ = push_log
        plain = evaluate(EvalConfig(policy=str(POLICY), episodes=2, safety="on", monitor="on", progress=False))
        assert [e["return"] for e in plain["per_episode"]] == [e["return"] for e in report["per_episode"]]
        assert plain["safety_interventions"] == report["safety_interventions"]


class TestBadLogPath:
    def test_a_folder_that_is_a_file_warns_once_and_the_eval_reports(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("x")
        config = EvalConfig(
            policy="expert", env="robot_rl/PandaPush-v0", episodes=1, log=blocker / "run.mcap", progress=False
        )
        report = evaluate(config)
        assert report["success_rate"] == 1.0
        assert report["log"].startswith("off: ") and "is a file, not a folder" in report["log"]
        warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert len(warnings) == 1 and "the run goes on" in warnings[0]

    def test_a_full_disk_warns_once_and_the_eval_reports(self, capsys: pytest.CaptureFixture[str]) -> None:
        if not Path("/dev/full").exists():
            pytest.skip("/dev/full (a device that is always full) exists on Linux only")
        config = EvalConfig(policy="expert", env="robot_rl/PandaPush-v0", episodes=1, log=Path("/dev/full"))
        report = evaluate(config)
        assert report["success_rate"] == 1.0
        assert "No space left on device" in report["log"]
        warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert len(warnings) == 1

    def test_the_cli_prints_the_report_and_the_log_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        argv = ["eval", "--policy", "expert", "--env", "robot_rl/PandaPush-v0", "--episodes", "1", "--no-progress"]
        assert run([*argv, "--log", str(blocker / "x.mcap")]) == 0
        out = capsys.readouterr()
        assert "| success rate |" in out.out and "log: off: --log" in out.out
        assert sum("robot-rl: warning: --log" in line for line in out.err.splitlines()) == 1

    def test_log_with_a_suite_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="--log"):
            EvalConfig(policy=str(POLICY), suite="robustness", log=tmp_path / "x.mcap")


class TestDataView:
    def test_a_demo_file_becomes_a_scene_from_its_saved_states(self, tmp_path: Path) -> None:
        demos = tmp_path / "demos.hdf5"
        collect("robot_rl/PandaPush-v0", "expert", 2, demos, seed=3, progress=False)
        summary = demos_to_mcap(demos)
        assert summary["out"] == str(tmp_path / "demos.mcap") and summary["without_states"] == []
        messages = read_mcap(Path(summary["out"]))
        with DemoDataset(demos) as ds:
            loaded = [ds[name] for name in ds.demo_names]
        steps = sum(d.num_samples for d in loaded)
        assert len(messages["/robot_rl/action"]) == len(messages["/robot_rl/goal"]) == steps
        assert len(messages["/tf"]) == steps  # the first state, then each saved state after it
        assert [m["success"] for _, m in messages["/robot_rl/episode"]] == [d.success for d in loaded]
        # The recorded actions, as sent.
        first = [m for _, m in messages["/robot_rl/action"][: loaded[0].num_samples]]
        assert np.array_equal([m["command"] for m in first], loaded[0].actions)
        # Poses from the saved states: the object sits where the demo's achieved goal says.
        t = 10
        _, transforms = messages["/tf"][t]
        obj = next(x for x in transforms.transforms if x.child_frame_id == "object")
        np.testing.assert_allclose(
            [obj.translation.x, obj.translation.y, obj.translation.z], loaded[0].obs["achieved_goal"][t], atol=1e-12
        )
        assert {e.id for e in messages["/scene"][0][1].entities} >= {"static", "goal", "body/object"}

    def test_the_cli_verb_writes_where_asked(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        demos = tmp_path / "d.hdf5"
        collect("robot_rl/PandaReach-v0", "expert", 1, demos, seed=0, progress=False)
        out = tmp_path / "view" / "reach.mcap"
        assert run(["data", "view", str(demos), "--out", str(out)]) == 0
        assert "1 demos" in capsys.readouterr().out
        assert {"/scene", "/tf", "/robot_rl/action"} <= set(read_mcap(out))


def _panels(node: Any) -> list[str]:
    return [node] if isinstance(node, str) else [*_panels(node["first"]), *_panels(node["second"])]


def _resolve(message: Any, path: str) -> Any:
    """``a.b[0].c`` in a decoded JSON message."""
    value = message
    for part in path.replace("]", "").split("."):
        name, _, index = part.partition("[")
        value = value[name]
        if index:
            value = value[int(index)]
    return value


def test_the_shipped_layout_shows_what_the_log_holds(push_log: Any) -> None:
    """docs/foxglove/robot_rl_layout.json: every panel placed, every topic and message path in an eval's log."""
    report, messages = push_log
    layout = json.loads((ROOT / "docs" / "foxglove" / "robot_rl_layout.json").read_text())
    assert sorted(_panels(layout["layout"])) == sorted(layout["configById"])
    paths = []
    for panel, config in layout["configById"].items():
        paths += [p["value"] for p in config.get("paths", [])]
        for key in ("topicToRender", "topicPath"):
            if key in config:
                assert config[key] in messages, f"{panel}: {config[key]}"
        for topic in config.get("topics", {}):
            assert topic in messages, f"{panel}: {topic}"
    assert paths
    for path in paths:
        topic, _, field = path.partition(".")
        assert topic in messages, path
        message = next(m for _, m in messages[topic] if isinstance(m, dict))
        _resolve(message, field)  # raises KeyError / IndexError when the path is not in the message
