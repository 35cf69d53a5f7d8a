"""robot_rl/data/mcap_messages.py: the policy node's status, checked on arrival and written as eval writes it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from robot_rl.data.mcap_log import RolloutLog
from robot_rl.data.mcap_messages import (
    action_message,
    finite_thresholds,
    monitor_message,
    parse_status,
    safety_message,
    status_message,
)
from robot_rl.monitor.failure_monitor import ChunkScore
from robot_rl.safety.chain import ChainReport
from tests.evaluation.test_mcap_log import read_mcap


@dataclasses.dataclass
class Chunk:
    ok: bool

    def summary(self) -> str:
        return "ok" if self.ok else "jump 0.4 > 0.2 at step 0"


def messages(step: int, latched: bool = False, alarm: bool = False) -> tuple[dict, dict, list[dict]]:
    action = action_message(3, step, [0.5, -0.2], [0.25, -0.2], None, None)
    report = ChainReport(changed=True, fallback="estop: operator" if latched else None)
    safety = safety_message(3, step, report, [], (latched, "operator" if latched else None), Chunk(True), 0.25)
    score = ChunkScore(step=step, rnd=1.0, entropy=2.0, rnd_window=1.5, entropy_window=2.5, alarm=alarm)
    limits = finite_thresholds({"rnd": 1.0, "entropy": 2.0, "progress": float("inf")})
    return action, safety, [monitor_message(3, score, limits, "fiper", "both")]


def test_a_status_round_trips_into_the_log_s_channels_with_their_events(tmp_path: Path) -> None:
    log = RolloutLog(tmp_path / "status.mcap")
    for step in range(3):
        stamp, parsed = parse_status(status_message(1000 + step, *messages(step, latched=step == 2, alarm=step >= 1)))
        assert stamp == 1000 + step
        for topic, message in parsed:
            log.record(stamp, topic, message)
    log.close()
    read = read_mcap(tmp_path / "status.mcap")  # typed, and valid against the schemas in the file
    assert [len(read[t]) for t in ("/robot_rl/action", "/robot_rl/safety", "/robot_rl/monitor")] == [3, 3, 3]
    assert read["/robot_rl/action"][0] == (1000, messages(0)[0])
    monitor = read["/robot_rl/monitor"][1][1]
    assert monitor["thresholds"]["progress"] is None and monitor["over"] == {
        "rnd": True,
        "entropy": True,
        "progress": False,
    }
    events = [(t, m.name, m.message) for t, m in read["/robot_rl/events"]]
    assert (1001, "monitor", "step 1: fiper alarm (rnd 1.5 > 1, entropy 2.5 > 2)") in events
    assert (1002, "estop", "step 2: e-stop latched (operator)") in events
    assert (1002, "safety", "step 2: fallback command sent (estop: operator)") in events
    assert len(events) == 3  # on changes only


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{not json", "a status must be JSON"),
        (b"[1, 2]", "a status is an object with keys ['action', 'monitor', 'safety', 'stamp_ns']. Got list."),
        (json.dumps({"stamp_ns": 1, "action": {}}), "Got ['action', 'stamp_ns']"),
        (json.dumps({"stamp_ns": -1, "action": {}, "safety": {}, "monitor": []}), "`stamp_ns` must be an integer >= 0"),
        (json.dumps({"stamp_ns": 1, "action": {}, "safety": {}, "monitor": {}}), "`monitor` must be a list"),
        (json.dumps({"stamp_ns": 1, "action": {"step": 0}, "safety": {}, "monitor": []}),
         "`action` must have the fields of robot_rl.Action"),
    ],
)  # fmt: skip
def test_what_is_not_a_status_is_refused_in_one_line(data, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_status(data)
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_a_step_that_is_not_an_integer_is_refused() -> None:
    action, safety, _ = messages(0)
    action["step"] = "zero"
    with pytest.raises(ValueError, match=r"`action.step` must be an integer. Got 'zero'"):
        parse_status(status_message(1, action, safety))


def test_record_takes_only_the_status_channels(tmp_path: Path) -> None:
    log = RolloutLog(tmp_path / "x.mcap")
    with pytest.raises(ValueError, match=r"`topic` must be one of \['/robot_rl/action'"):
        log.record(0, "/robot_rl/goal", {})
    log.close()
