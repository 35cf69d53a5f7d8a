"""The recorder's Foxglove file (parameter ``foxglove``): a policy episode on the sim bridge, read back typed.

Two runs: the policy node with its status on (the default), whose file holds the policy's own action, the
safety chain's report and the monitor's scores in the channels and schemas of ``robot-rl eval --log`` (so the
shipped Foxglove layout reads it), and a node with ``publish_status`` off, whose file has what the step records
carry (the command sent).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytest.importorskip("rosbags", reason="rosbags not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.recorder import BagRecorder  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from robot_rl.data.mcap_file import TOPICS  # noqa: E402
from tests.evaluation.test_mcap_log import ROOT, _panels, _resolve, read_mcap  # noqa: E402
from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, spin_for, spin_until  # noqa: E402

STATUS_CHANNELS = ("/robot_rl/action", "/robot_rl/safety", "/robot_rl/monitor")


def _resolves(message, field):
    try:
        _resolve(message, field)
    except (KeyError, IndexError):
        return False
    return True


def _nodes(ros_context, tmp_path, **policy_values):
    recorder = BagRecorder(
        context=ros_context,
        parameter_overrides=[Parameter("output", value=str(tmp_path / "bag")),
                             Parameter("foxglove", value=str(tmp_path / "run.mcap")),
                             Parameter("discovery_period", value=0.05)],
    )  # fmt: skip
    bridge = SimBridge(context=ros_context, parameter_overrides=[Parameter("seed", value=EVAL_SEED)])
    values = {"policy": PUSH_POLICY, "seed": EVAL_SEED, **policy_values}
    policy = PolicyNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    return recorder, bridge, policy


def _start(executor, recorder, bridge, policy):
    for node in (recorder, bridge, policy):
        executor.add_node(node)
    policy.trigger_configure()
    assert policy.runtime is not None, "configure failed (see the log)"
    spin_until(executor, lambda: "/robot_rl/steps" in recorder._connections, timeout=5.0)
    spin_for(executor, 0.3)
    bridge.reset_episode()
    policy.trigger_activate()


@pytest.mark.usefixtures("safety_chain_available")
def test_the_file_holds_the_policy_node_s_action_safety_report_and_monitor(ros_context, executor, tmp_path):
    recorder, bridge, policy = _nodes(ros_context, tmp_path, require_safety=True, monitor=True)
    _start(executor, recorder, bridge, policy)
    assert policy.status is not None and policy.runtime.monitor is not None, policy.runtime.notes
    log = recorder.foxglove

    def caught_up(ticks):
        # Every status published so far has reached the recorder (no tick runs between this check and the next
        # step of the test: ticks run only inside spin_once).
        return policy.status.published >= ticks and log.statuses == policy.status.published

    assert spin_until(executor, lambda: caught_up(30), timeout=15.0)
    running = policy.status.published
    client = rclpy.create_node("estop_client", context=ros_context)
    executor.add_node(client)
    estop = client.create_client(Trigger, "/robot_rl_policy/estop")
    assert estop.wait_for_service(timeout_sec=2.0)
    future = estop.call_async(Trigger.Request())
    assert spin_until(executor, future.done, timeout=2.0) and future.result().success
    latched_at = policy.status.published
    assert spin_until(executor, lambda: caught_up(latched_at + 6), timeout=5.0)
    ticks = policy.status.published
    policy.trigger_deactivate()  # no tick after this
    spin_for(executor, 0.2)
    recorder.close()
    assert not log.refused

    path = tmp_path / "run.mcap"
    messages = read_mcap(path)  # every channel typed, every JSON message valid against the schema in the file
    with path.open("rb") as stream:
        summary = make_reader(stream).get_summary()
    for channel in summary.channels.values():
        assert summary.schemas[channel.schema_id].name == TOPICS[channel.topic][0], channel.topic
    assert set(STATUS_CHANNELS) <= set(messages)
    actions = [m for _, m in messages["/robot_rl/action"]]
    safety = [m for _, m in messages["/robot_rl/safety"]]
    scores = [m for _, m in messages["/robot_rl/monitor"]]
    # One action and one safety report per tick that sent a command, in order; none from the step records.
    assert len(actions) == len(safety) == ticks
    assert [a["step"] for a in actions] == list(range(ticks)) == [s["step"] for s in safety]
    assert {a["episode"] for a in actions} == {messages["/robot_rl/episode"][-1][1]["episode"]}
    # The policy's own action before the chain, the command after it: the chain moved some commands.
    assert any(a["changed"] and a["policy"] != a["command"] for a in actions[:running])
    for action, report in zip(actions, safety, strict=True):
        assert report["chain"] and report["max_change"] == pytest.approx(action["max_change"])
        assert action["controller"]["chunk_index"] >= 0
    running_reports = safety[:running]
    for report in running_reports:  # the QP's report, or a fallback before it (a late tick on a loaded machine)
        assert report["watchdog"] is not None
        assert (report["filters"] and report["filters"][0]["name"] == "franka_cbf_qp") or report["fallback"], report
    assert any(r["filters"] and r["filters"][0]["active"] for r in running_reports)  # active constraints of the QP
    assert all(r["chunk"] is not None for r in safety)
    # The e-stop: latched with its reason, the fallback sent, an event on the timeline.
    held = [r for r in safety[running:] if r["estop"]["latched"]]
    assert held and safety[-1]["estop"] == {"latched": True, "reason": "operator (~/estop)"}
    assert all(r["fallback"] == "estop: operator (~/estop)" for r in held)
    events = [(m.name, m.message) for _, m in messages["/robot_rl/events"]]
    assert any(name == "estop" and "e-stop latched (operator (~/estop))" in line for name, line in events)
    assert any(name == "safety" and "fallback command sent" in line for name, line in events)
    # The monitor: one message per new chunk, with the calibrated thresholds and the comparison.
    new_chunks = [a["step"] for a in actions if a["controller"]["new_chunk"]]
    assert len(scores) == len(new_chunks) >= 2
    assert [s["step"] for s in scores] == new_chunks
    for score in scores:
        assert score["detector"] == "fiper" and score["rule"] == "both"
        assert score["thresholds"]["rnd"] is not None and score["thresholds"]["entropy"] is not None
        assert score["over"]["rnd"] == (score["windowed"]["rnd"] > score["thresholds"]["rnd"])
    # The status's own time: the tick, monotonic, before the step record of the same tick reached the recorder.
    stamps = [t for t, _ in messages["/robot_rl/action"]]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] > 0
    # One layout for both: every topic and message path of docs/foxglove/robot_rl_layout.json is in this file.
    layout = json.loads((ROOT / "docs" / "foxglove" / "robot_rl_layout.json").read_text())
    assert sorted(_panels(layout["layout"])) == sorted(layout["configById"])
    for config in layout["configById"].values():
        for key in ("topicToRender", "topicPath"):
            if key in config:
                assert config[key] in messages, config[key]
        for entry in config.get("paths", []):  # in some message (none in a fallback's: its filters never ran)
            topic, _, field = entry["value"].partition(".")
            assert any(_resolves(m, field) for _, m in messages[topic]), entry["value"]
    # The raw status is in the bag too.
    assert recorder.counts["/robot_rl/status"] == ticks


def test_without_status_the_file_has_what_the_step_records_carry(ros_context, executor, tmp_path):
    recorder, bridge, policy = _nodes(ros_context, tmp_path, require_safety=False, monitor=False, publish_status=False)
    _start(executor, recorder, bridge, policy)
    assert policy.status is None
    assert spin_until(executor, lambda: bridge.done, timeout=10.0)
    spin_for(executor, 0.2)
    policy.trigger_deactivate()
    spin_for(executor, 0.1)
    recorder.close()

    messages = read_mcap(tmp_path / "run.mcap")
    assert "/robot_rl/safety" not in messages and "/robot_rl/monitor" not in messages
    actions = [m for _, m in messages["/robot_rl/action"]]
    assert len(actions) >= 50 and len(messages["/robot_rl/goal"]) == len(actions)
    # One pose per start event (the bridge's resets, the policy's activation), then one per step record.
    starts = sum(m.message.endswith(")") and "starts" in m.message for _, m in messages["/robot_rl/events"])
    assert len(messages["/tf"]) == len(actions) + starts
    assert all(a["command"] == a["policy"] for a in actions)  # the records carry the command sent only
    episodes = [m for _, m in messages["/robot_rl/episode"]]
    assert episodes and episodes[-1]["seed"] == EVAL_SEED and episodes[-1]["success"] == bridge.success
    # The arm moved: /joint_states posed it (the model's joint1.. from fr3_joint1..).
    first, last = messages["/tf"][-len(actions)][1], messages["/tf"][-1][1]
    hand = [next(t for t in m.transforms if t.child_frame_id == "hand").translation for m in (first, last)]
    assert abs(hand[0].x - hand[1].x) + abs(hand[0].y - hand[1].y) + abs(hand[0].z - hand[1].z) > 0.01
    # The object sits at the last achieved goal.
    obj = next(t for t in last.transforms if t.child_frame_id == "object").translation
    assert [obj.x, obj.y, obj.z] == pytest.approx(messages["/robot_rl/goal"][-1][1]["achieved"], abs=1e-12)
