"""The control loop's real-time setup (realtime_priority, lock_memory, manage_gc): refused settings warn, never fail."""

from __future__ import annotations

import gc
import os
import threading

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros import realtime  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.realtime import RealtimeLoop  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402

from tests.ros.conftest import EVAL_SEED, QUAD_POLICY, spin_until  # noqa: E402

LINUX = hasattr(os, "sched_setscheduler")


def quadrotor(ros_context, executor, **values):
    """A sim bridge and a policy node (quadrotor, 50 Hz) on ``executor``; the node configured, not active."""
    bridge = SimBridge(
        context=ros_context,
        parameter_overrides=[
            Parameter("env_id", value="robot_rl/QuadrotorWaypoint-v1"),
            Parameter("seed", value=EVAL_SEED),
        ],
    )
    values = {"policy": QUAD_POLICY, "require_safety": False, "safety": False, "monitor": False, **values}
    node = PolicyNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    executor.add_node(bridge)
    executor.add_node(node)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    return bridge, node


def scheduling(threads):
    """Thread id -> (policy, priority) of those of ``threads`` still alive (other tests' contexts end theirs)."""
    out = {}
    for tid in threads:
        try:
            out[tid] = os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority
        except ProcessLookupError:
            pass
    return out


def run_ticks(executor, node, n=10):
    """Activate and spin until ``n`` commands went out."""
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert spin_until(executor, lambda: node.stats.steps >= n, timeout=5.0)


@pytest.mark.skipif(not LINUX, reason="SCHED_FIFO is Linux only")
def test_a_refused_priority_warns_and_the_node_still_runs(ros_context, executor, monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    _, node = quadrotor(ros_context, executor, realtime_priority=50)
    warnings = []
    node.realtime.warn = warnings.append
    run_ticks(executor, node)
    assert len(warnings) == 1 and "SCHED_FIFO refused (Operation not permitted)" in warnings[0]
    assert "rtprio" in warnings[0] and "realtime_priority:=0" in warnings[0]
    _, _, values = node.diagnostics()
    assert values["realtime_priority"] == 0 and values["steps"] >= 10


@pytest.mark.skipif(not LINUX, reason="SCHED_FIFO is Linux only")
def test_priority_zero_leaves_the_scheduler_alone(ros_context, executor, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *args: calls.append(args))
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    _, node = quadrotor(ros_context, executor)  # realtime_priority defaults to 0
    run_ticks(executor, node)
    assert calls == [] and (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    assert node.diagnostics()[2]["realtime_priority"] == 0


@pytest.mark.skipif(not LINUX, reason="SCHED_FIFO is Linux only")
def test_a_granted_priority_holds_while_active_and_is_undone_on_deactivate(ros_context, executor):
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("this user may not use SCHED_FIFO (no rtprio limit, no CAP_SYS_NICE)")
    os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
    _, node = quadrotor(ros_context, executor, realtime_priority=2)
    middleware = scheduling(realtime._threads_named(realtime.MIDDLEWARE_THREADS))  # Fast DDS's threads
    assert middleware
    run_ticks(executor, node)  # the ticks run in this thread
    assert os.sched_getscheduler(0) == os.SCHED_FIFO and os.sched_getparam(0).sched_priority == 2
    during = scheduling(middleware)
    assert during and set(during.values()) == {(os.SCHED_FIFO, 1)}  # one below the loop's
    _, _, values = node.diagnostics()
    assert values["realtime_priority"] == 2 and values["realtime_middleware_threads"] >= len(during)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    after = scheduling(middleware)
    assert after == {tid: middleware[tid] for tid in after}


@pytest.mark.parametrize("priority", [-1, 100])
def test_a_priority_outside_1_to_99_fails_configure(ros_context, executor, priority):
    node = PolicyNode(
        context=ros_context,
        parameter_overrides=[Parameter("policy", value=QUAD_POLICY), Parameter("realtime_priority", value=priority)],
    )
    executor.add_node(node)
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.runtime is None


def test_collections_leave_the_tick_while_active_and_come_back_after(ros_context, executor):
    assert gc.isenabled()
    _, node = quadrotor(ros_context, executor)
    run_ticks(executor, node)
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    assert node.diagnostics()[2]["gc_managed"] is True
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert gc.isenabled() and gc.get_freeze_count() == 0


class _Cycle:
    """Garbage only the collector frees (an instance: no free list hides its allocation from the counts)."""

    def __init__(self):
        self.me = self


def test_collect_runs_the_collection_automatic_collection_would_have():
    thresholds = gc.get_threshold()
    loop = RealtimeLoop(manage_gc=True)
    try:
        gc.set_threshold(50, 2, 2)
        loop.start()
        generations = []

        def record(phase, info):
            if phase == "start":
                generations.append(info["generation"])

        gc.callbacks.append(record)
        try:
            for _ in range(40):
                for _ in range(60):  # 60 objects in reference cycles per round: one collection due each time
                    cycle = _Cycle()
                del cycle
                loop.collect()
        finally:
            gc.callbacks.remove(record)
        assert loop.collections == 40 and generations.count(0) > generations.count(1) > generations.count(2) > 0
    finally:
        loop.release()
        gc.set_threshold(*thresholds)
    assert gc.isenabled()


def test_two_loops_in_one_process_restore_the_collector_once_both_stopped():
    first, second = RealtimeLoop(), RealtimeLoop()
    first.start()
    second.start()
    first.release()
    assert not gc.isenabled()  # the second loop still runs
    second.release()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_refused_lock_memory_warns(monkeypatch):
    monkeypatch.setattr(realtime, "_mlockall", lambda: "Cannot allocate memory")
    warnings = []
    loop = RealtimeLoop(lock_memory=True, manage_gc=False, warn=warnings.append)
    loop.start()
    loop.enter_thread()
    loop.release()
    assert not loop.locked and len(warnings) == 1 and "mlockall refused (Cannot allocate memory)" in warnings[0]


def test_the_fifo_thread_is_the_one_that_ran_the_loop(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "sched_getscheduler", lambda tid: 0)
    monkeypatch.setattr(os, "sched_getparam", lambda tid: os.sched_param(0))
    monkeypatch.setattr(os, "sched_setscheduler", lambda tid, policy, param: calls.append((tid, policy, param)))
    loop = RealtimeLoop(priority=20, manage_gc=False, middleware_threads=())
    loop.start()
    worker = threading.Thread(target=loop.enter_thread)
    worker.start()
    worker.join()
    loop.enter_thread()  # once per start: a second call does nothing
    loop.release()
    assert [(tid, policy, param.sched_priority) for tid, policy, param in calls] == [
        (worker.native_id, os.SCHED_FIFO, 20),
        (worker.native_id, 0, 0),
    ]
