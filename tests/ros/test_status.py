"""The policy node's status (robot_rl_ros/status.py) without middleware: what it holds, when it is built."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from robot_rl_ros.control import RuntimeConfig, build_runtime, load_safety  # noqa: E402
from robot_rl_ros.status import StatusPublisher  # noqa: E402

from robot_rl.data.mcap_messages import parse_status  # noqa: E402
from robot_rl.evaluation.guard import Guard  # noqa: E402
from tests.ros.conftest import EVAL_SEED, PUSH_POLICY  # noqa: E402


class FakePublisher:
    """Stands in for the node's String publisher: ``subscribers`` listeners, the messages kept."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.sent: list[str] = []

    def get_subscription_count(self) -> int:
        return self.subscribers

    def publish(self, msg) -> None:
        self.sent.append(msg.data)


def run(runtime, status, steps, estop_after=None):
    """``steps`` Controller steps of PandaPush through ``status``, as the node's tick does them."""
    env = runtime.env
    guard = Guard(runtime.env_id, env, False)
    obs, _ = env.reset(seed=EVAL_SEED)
    runtime.controller.reset(EVAL_SEED)
    if runtime.chain is not None:
        runtime.chain.reset()
    if runtime.monitor is not None:
        runtime.monitor.reset(EVAL_SEED)
    status.reset()
    dt = runtime.ctrl_dt
    output = None
    for t in range(steps):
        observation = guard.observation(obs)
        observation["stamp"] = np.array(t * dt)
        if estop_after is not None and t == estop_after and runtime.chain is not None:
            runtime.chain.estop.trigger("operator (~/estop)", t * dt)
        output = runtime.controller.step(observation, t * dt)
        status.publish(int(t * dt * 1e9), 0, t, output, output.action)
        obs, *_ = env.step(output.action)
        guard.step_index += 1
    return output


@pytest.fixture(scope="module")
def runtime():
    try:
        load_safety("robot_rl/PandaPush-v0")
    except RuntimeError as err:
        pytest.skip(f"safety chain unavailable: {err}")
    built = build_runtime(RuntimeConfig(policy=PUSH_POLICY, monitor=True))
    assert built.chain is not None and built.monitor is not None, built.notes
    yield built
    built.controller.close()


def test_each_tick_carries_action_safety_and_the_new_chunk_s_scores(runtime):
    publisher = FakePublisher(subscribers=1)
    status = StatusPublisher(publisher, runtime)
    run(runtime, status, 20, estop_after=15)
    assert status.published == len(publisher.sent) == 20 and len(status.cost_s) == 20
    parsed = [parse_status(data) for data in publisher.sent]
    assert [stamp for stamp, _ in parsed] == [round(t * runtime.ctrl_dt * 1e9) for t in range(20)]
    by_topic = [dict.fromkeys([topic for topic, _ in messages]) for _, messages in parsed]
    assert all(list(topics)[:2] == ["/robot_rl/action", "/robot_rl/safety"] for topics in by_topic)
    actions = [messages[0][1] for _, messages in parsed]
    safety = [messages[1][1] for _, messages in parsed]
    scores = [m for _, messages in parsed for topic, m in messages if topic == "/robot_rl/monitor"]
    assert [s["step"] for s in scores] == [a["step"] for a in actions if a["controller"]["new_chunk"]]
    assert scores and all(s["thresholds"]["rnd"] is not None for s in scores)
    assert all(s["chain"] and s["watchdog"]["ok"] for s in safety[:15])
    assert any(a["policy"] != a["command"] for a in actions[:15])  # the QP moved the policy's action
    assert all(s["estop"] == {"latched": True, "reason": "operator (~/estop)"} for s in safety[15:])
    assert all(s["fallback"] == "estop: operator (~/estop)" and not s["filters"] for s in safety[15:])
    runtime.chain.estop.reset()


def test_nothing_is_built_while_nobody_listens(runtime):
    publisher = FakePublisher(subscribers=0)
    status = StatusPublisher(publisher, runtime)
    last = run(runtime, status, 12)
    assert publisher.sent == [] and status.published == 0 and status.unheard == 12 and not status.cost_s
    values = status.summary()
    assert values["status_published"] == 0 and values["status_unheard"] == 12 and np.isnan(values["status_p50_ms"])
    # A listener joins: the monitor's scores of the ticks nobody heard are not sent late.
    assert runtime.monitor.trace
    publisher.subscribers = 1
    status.publish(1, 0, 12, last, last.action)
    _, messages = parse_status(publisher.sent[0])
    assert [topic for topic, _ in messages] == ["/robot_rl/action", "/robot_rl/safety"]


def test_without_a_chain_the_node_s_own_hold_is_the_fallback():
    publisher = FakePublisher(subscribers=1)
    plain = build_runtime(RuntimeConfig(policy=PUSH_POLICY, safety=False, require_safety=False, monitor=False))
    try:
        status = StatusPublisher(publisher, plain)
        env = plain.env
        obs, _ = env.reset(seed=EVAL_SEED)
        plain.controller.reset(EVAL_SEED)
        output = plain.controller.step(obs, 0.0)
        hold = np.zeros_like(output.action)
        status.publish(0, 0, 0, output, hold, "operator (~/estop)", "estop: operator (~/estop)")
        (_, messages) = parse_status(publisher.sent[0])
        action, safety = messages[0][1], messages[1][1]
        assert [topic for topic, _ in messages] == ["/robot_rl/action", "/robot_rl/safety"]  # no monitor
        assert action["command"] == hold.tolist() and action["policy"] == output.policy_action.tolist()
        assert safety["chain"] is False and safety["changed"] is True
        assert safety["fallback"] == "estop: operator (~/estop)"
        assert safety["estop"] == {"latched": True, "reason": "operator (~/estop)"}
    finally:
        plain.controller.close()
