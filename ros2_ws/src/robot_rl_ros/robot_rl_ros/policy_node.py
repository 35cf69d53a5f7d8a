"""The policy node: an exported robot_rl policy driving a robot through its safety chain (rclpy lifecycle node).

Lifecycle (ros2/demos ``lifecycle_py``):

- ``configure``: load ``policy`` (``policies/NAME``; OnnxPolicy checks the sha256 of policy.onnx;
  a card whose ``ctrl_dt`` is not the period its env was trained at, or not a plausible period for the
  robot, is refused: :func:`robot_rl_ros.control.check_control_period`), build the Controller with the
  robot's safety chain (``hardware/<robot>.yaml``) and the failure monitor (off, with the reason in the
  diagnostics, when the folder has no calibration), make the robot adapter
  (:mod:`robot_rl_ros.adapters`: subscriptions, command publishers);
- ``activate``: new episode (the Controller and the safety chain reset, noise seeded with
  ``seed`` when >= 0; cached states dropped), then the control timer runs at the policy's rate;
- ``deactivate``: the timer stops, the adapter stops streaming (Crazyflie: notify_setpoints_stop);
- ``cleanup``: everything is released.

Each tick (crazyswarm2's ``_timer_callback`` shape): read the cached inputs (the subscription
callbacks checked and converted each message on arrival, refusing and counting malformed ones, and
states whose own header stamp is stale, ahead of the node's clock by more than
``clock_skew_tolerance`` or zero), build the observation, ``Controller.step(observation, now)`` with
``stamp`` = the header stamp of the newest state, publish the command. While no complete state has
arrived since activation nothing is published. The chain's watchdog turns a silent state topic (or
one whose states are all refused) into the fallback command (hold / hover) at the first tick past its
deadline. With ``prefetch`` each chunk is computed in a background
thread ahead of the tick that needs it: with ``prefetch_lead`` 0 (default) the first complete state
after the tick before (a state callback, between ticks) starts it (``Controller.prime``); with N >= 1
the tick N steps before starts it, and the state callback only the episode's first. No tick runs the
policy's inference unless the thread is late.

Parameters: ``policy`` (folder or shipped name), ``blend``, ``n_action_steps``, ``prefetch``, ``prefetch_lead``,
``threads`` (the Controller and onnxruntime), ``safety`` (the chain with its chunk validator, as
``robot-rl eval --safety on`` runs it), ``require_safety``, ``hardware_dir``, ``monitor``, ``monitor_detector``
(the calibrated detector that raises the alarm: ``fiper`` by default, or ``progress`` / ``fiper_progress`` on
goal tasks, ...), ``seed`` (noise seed of the next episode; -1 none),
``diagnostics_period`` [s], ``publish_steps``, ``publish_status``, ``autostart`` (``main``: configure and activate at
start-up), ``follow_episodes`` (a sim bridge's ``start`` event on ``/robot_rl/episode`` starts a new
episode with that seed: for the bridge's ``autoreset``), ``stats_window`` (latency samples kept for
the percentiles), the real-time setup of the control loop (:class:`robot_rl_ros.realtime.RealtimeLoop`,
in force while active): ``realtime_priority`` (SCHED_FIFO priority of the thread running the timer,
1..99; 0: off; refused by the OS: a warning, and the loop runs as before), ``lock_memory``
(``mlockall``), ``manage_gc`` (objects frozen at activation, collections run after the command is
out instead of inside the tick), and the robot adapter's (:mod:`robot_rl_ros.adapters`), among them
the state stamp check's: ``max_state_age`` [s] (a state stamped longer ago is refused on arrival; 0,
the default: the watchdog deadline of ``hardware/<robot>.yaml``, or 2.5 periods without a safety
chain) and ``clock_skew_tolerance`` [s] (how far ahead of the node's clock a stamp may be; 0.01 by
default, see :data:`robot_rl_ros.control.CLOCK_SKEW_TOLERANCE_S`).

Services: ``~/estop`` and ``~/reset`` (std_srvs/Trigger). The e-stop latches: the fallback
command is sent every tick until ``~/reset``, which releases it and starts a new episode.
Topics out: the robot's commands; ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every
``diagnostics_period`` s: monitor state, safety interventions and fallbacks, loop latency, refused
messages); ``/robot_rl/steps`` and ``/robot_rl/episode`` (the records ``robot-rl data from-bag``
converts); ``/robot_rl/status`` (std_msgs/String JSON, every tick that sends a command: the policy's action, the
command sent, the safety chain's report, the chunk verdict, the monitor's scored chunks, in the fields of
``robot-rl eval --log``: :mod:`robot_rl_ros.status`). Topic in: ``/robot_rl/intervention`` (std_msgs/Bool
from the teleop node): while true the node yields, sending nothing; the policy restarts from a fresh history
when it is released.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from robot_rl.data.bag import EPISODE_TOPIC, STEP_TOPIC
from robot_rl.data.mcap_messages import STATUS_TOPIC
from robot_rl_ros import conversions as conv
from robot_rl_ros.adapters import ADAPTERS, RobotAdapter
from robot_rl_ros.control import Runtime, RuntimeConfig, build_runtime
from robot_rl_ros.realtime import LoopStats, RealtimeLoop
from robot_rl_ros.spin import spin_node
from robot_rl_ros.status import StatusPublisher

EVENT_QOS = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Episode events: kept for late joiners (a recorder started after the node)."""


class PolicyNode(LifecycleNode):
    """Runs ``policies/NAME`` on a robot (see the module docstring for parameters, topics and services).

    Args:
        node_name: The node's name.
        **kwargs: Passed to ``LifecycleNode`` (``context=`` in tests, ``parameter_overrides=``).
    """

    def __init__(self, node_name: str = "robot_rl_policy", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter("policy", "")
        self.declare_parameter("blend", "none")
        self.declare_parameter("n_action_steps", 0)
        self.declare_parameter("prefetch", False)
        self.declare_parameter("prefetch_lead", 0)
        self.declare_parameter("threads", 1)
        self.declare_parameter("safety", True)
        self.declare_parameter("require_safety", True)
        self.declare_parameter("hardware_dir", "")
        self.declare_parameter("monitor", True)
        self.declare_parameter("monitor_detector", "fiper")
        self.declare_parameter("seed", -1)
        self.declare_parameter("diagnostics_period", 1.0)
        self.declare_parameter("publish_steps", True)
        self.declare_parameter("publish_status", True)
        self.declare_parameter("autostart", False)  # main(): configure and activate at start-up
        self.declare_parameter("follow_episodes", False)
        self.declare_parameter("stats_window", 2000)
        self.declare_parameter("realtime_priority", 0)  # SCHED_FIFO priority of the control thread; 0: off
        self.declare_parameter("lock_memory", False)
        self.declare_parameter("manage_gc", True)
        self.runtime: Runtime | None = None
        self.adapter: RobotAdapter | None = None
        self.stats: LoopStats | None = None
        self.realtime: RealtimeLoop | None = None
        self.status: StatusPublisher | None = None
        self._timer: Any = None
        self._diag_timer: Any = None
        self._estop_reason = ""
        self._intervening = False
        self._episode = -1
        self._step = 0
        self._tick_now = -math.inf
        """The node's clock at the last tick (a chunk is primed only from states received after it)."""
        self._seed = -1
        self._alarm = False
        self.create_service(Trigger, "~/estop", self._on_estop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_subscription(Bool, "/robot_rl/intervention", self._on_intervention, 10)
        self.create_subscription(String, EPISODE_TOPIC, self._on_episode_event, EVENT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """The node's clock [s] (receipt times, the Controller's ``now`` and the watchdog share it)."""
        return self.get_clock().now().nanoseconds * 1e-9

    # -------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the policy and build the runtime and the robot adapter."""
        p = self.get_parameter
        try:
            config = RuntimeConfig(
                policy=str(p("policy").value),
                blend=str(p("blend").value),  # type: ignore[arg-type]
                n_action_steps=int(p("n_action_steps").value),
                prefetch=bool(p("prefetch").value),
                prefetch_lead=int(p("prefetch_lead").value),
                threads=int(p("threads").value),
                safety=bool(p("safety").value),
                require_safety=bool(p("require_safety").value),
                hardware_dir=str(p("hardware_dir").value),
                monitor=bool(p("monitor").value),
                monitor_detector=str(p("monitor_detector").value),
            )
            realtime = RealtimeLoop(
                int(p("realtime_priority").value),
                lock_memory=bool(p("lock_memory").value),
                manage_gc=bool(p("manage_gc").value),
                warn=self.get_logger().warning,
            )
            self.runtime = runtime = build_runtime(config)
            self.adapter = ADAPTERS[runtime.robot](self, runtime.env, self.create_lifecycle_publisher, self.now)
            self.adapter.on_input = self._on_input
            watchdog = getattr(runtime.chain, "watchdog", None)
            if not self.adapter.max_state_age and watchdog is not None:
                # A state already past the watchdog's deadline on arrival would only ever give the fallback.
                self.adapter.stamp_check.max_age_s = float(watchdog.deadline_s)
        except (ValueError, RuntimeError, OSError) as err:
            self.get_logger().error(f"configure failed: {err}")
            self.runtime = self.adapter = None
            return TransitionCallbackReturn.FAILURE
        for note in runtime.notes:
            self.get_logger().warning(note)
        if self._estop_reason and runtime.chain is not None:
            runtime.chain.estop.trigger(self._estop_reason)  # an e-stop from before configure still holds
        self.stats = LoopStats(runtime.ctrl_dt, window=int(p("stats_window").value))
        self.realtime = realtime
        self._publish_steps = bool(p("publish_steps").value)
        self._steps_pub = self.create_lifecycle_publisher(Float64MultiArray, STEP_TOPIC, 10)
        self._episode_pub = self.create_publisher(String, EPISODE_TOPIC, EVENT_QOS)
        if bool(p("publish_status").value):
            status_pub = self.create_lifecycle_publisher(String, STATUS_TOPIC, 10)
            self.status = StatusPublisher(status_pub, runtime, window=int(p("stats_window").value))
        period = float(p("diagnostics_period").value)
        self._diag_timer = self.create_timer(period, self.publish_diagnostics)
        self.get_logger().info(
            f"configured {runtime.policy!r} on {runtime.robot} at {1.0 / runtime.ctrl_dt:.0f} Hz; commands on "
            f"{self.adapter.command_topic}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start an episode and the control timer."""
        assert self.runtime is not None and self.stats is not None and self.realtime is not None
        problem = self.adapter.preflight() if self.adapter is not None else ""
        if problem:  # inputs that contradict the configuration (crazyflie_vendor.py): stay inactive
            self.get_logger().error(f"activate refused: {problem}")
            return TransitionCallbackReturn.FAILURE
        self._new_episode()
        self.realtime.start()  # the scheduler changes at the first tick, in the timer's thread
        self._timer = self.create_timer(self.runtime.ctrl_dt, self.tick)
        result = super().on_activate(state)
        if self.adapter is not None:
            self.adapter.start()  # after the lifecycle publishers are active
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the control timer and the command stream."""
        self._stop_timer()
        if self.realtime is not None:
            self.realtime.release()
        if self.adapter is not None:
            self.adapter.stop()
        self._publish_event({"event": "end"})
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the runtime (the adapter's subscriptions go with the node's)."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Undo the real-time setup (the process lives on), then destroy the node."""
        if self.realtime is not None:
            self.realtime.release()
        super().destroy_node()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _release(self) -> None:
        self._stop_timer()
        if self.realtime is not None:
            self.realtime.release()
            self.realtime = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.runtime is not None:
            self.runtime.controller.close()
        if self.adapter is not None:
            self.adapter.close()
        self.runtime = self.adapter = self.status = None

    def _new_episode(self, seed: int | None = None) -> None:
        runtime = self.runtime
        assert runtime is not None and self.adapter is not None and self.stats is not None
        seed = int(self.get_parameter("seed").value) if seed is None else seed
        self._seed = seed
        runtime.controller.reset(seed if seed >= 0 else None)
        if runtime.chain is not None:
            runtime.chain.reset()
        if runtime.monitor is not None:
            runtime.monitor.reset(seed if seed >= 0 else None)
        self.adapter.reset()
        self.stats.restart()
        if self.status is not None:
            self.status.reset()
        self._episode += 1
        self._step = 0
        event = {"event": "start", "env_id": runtime.env_id, "seed": seed if seed >= 0 else None}
        if self.status is not None:
            event["status"] = STATUS_TOPIC  # the recorder takes the actions from there, not from the step records
        self._publish_event(event)

    def _publish_event(self, event: dict[str, Any]) -> None:
        if self.runtime is not None:
            self._episode_pub.publish(String(data=json.dumps({"source": "policy", **event})))

    # ------------------------------------------------------------------- tick
    def tick(self) -> None:
        """One control period: cached messages -> observation -> Controller.step -> command."""
        realtime = self.realtime
        if realtime is None:
            self._control_step()
            return
        realtime.enter_thread()
        try:
            self._control_step()
        finally:
            realtime.collect()  # after the command is out

    def _control_step(self) -> None:
        start = time.perf_counter()
        runtime, adapter, stats = self.runtime, self.adapter, self.stats
        if runtime is None or adapter is None or stats is None:
            return
        now_ns = self.get_clock().now().nanoseconds
        now = now_ns * 1e-9
        self._tick_now = now
        stats.tick(now)
        if self._intervening:
            return
        observation = adapter.observation()
        if observation is None:
            stats.waiting += 1
            return
        chain = runtime.chain
        output = runtime.controller.step(observation, now)
        action = output.action
        report = output.status.filter_reports[0] if chain is not None and output.status.filter_reports else None
        fallback = getattr(report, "fallback", None)
        changed = bool(getattr(report, "changed", False))
        if chain is None and self._estop_reason:
            # No chain to latch: the node holds the robot itself.
            action, fallback, changed = adapter.hold_action(), f"estop: {self._estop_reason}", True
        adapter.publish(action)
        latency = time.perf_counter() - start
        status = output.status
        # The failure monitor's alarm; a chunk the chain's validator refused shows as its `chunk_rejected` fallback.
        alarm = runtime.stack.monitor_alarm(status)
        computed = status.computed_chunk or status.waited
        stats.step(latency, now - observation["stamp"], changed, fallback, alarm, computed)
        self._alarm = alarm
        if self._publish_steps:
            self._steps_pub.publish(
                conv.step_record(
                    {
                        "episode": self._episode,
                        "seed": self._seed,
                        "step": self._step,
                        "observation": observation["observation"],
                        "achieved_goal": observation["achieved_goal"],
                        "desired_goal": observation["desired_goal"],
                        "action": action,
                        "intervention": 0.0,
                    }
                )
            )
        if self.status is not None:
            self.status.publish(now_ns, self._episode, self._step, output, action, self._estop_reason, fallback)
        self._step += 1

    # --------------------------------------------------------------- services
    def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        reason = "operator (~/estop)"
        if self.runtime is not None and self.runtime.chain is not None:
            self.runtime.chain.estop.trigger(reason, self.now())
        self._estop_reason = reason
        if self.adapter is not None:
            self.adapter.estop()
        self.get_logger().warning("e-stop latched: sending the fallback command until ~/reset")
        response.success, response.message = True, "e-stop latched; call ~/reset to release"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.runtime is None:
            response.success, response.message = False, "not configured"
            return response
        if self.runtime.chain is not None:
            self.runtime.chain.estop.reset()
        self._estop_reason = ""
        self._new_episode()
        self.get_logger().info("reset: e-stop released, new episode")
        response.success, response.message = True, f"episode {self._episode} started"
        return response

    def _on_episode_event(self, msg: String) -> None:
        """With ``follow_episodes``: a new sim episode (sim bridge ``start`` event) starts a new episode here."""
        if not self.get_parameter("follow_episodes").value or self._timer is None:
            return
        try:
            event = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        if event.get("source") == "sim" and event.get("event") == "start":
            # Started here, not at the next tick: the new episode's first state (published right after the
            # event) then primes the first chunk before the first tick needs it.
            seed = event.get("seed")
            self._new_episode(int(seed) if isinstance(seed, int) else -1)

    def _on_input(self, name: str) -> None:
        """A state message was stored: with prefetch, start the chunk the next tick needs from the newest state.

        Runs in the executor's thread (as the tick does), between ticks: the Controller wants a chunk when the
        next tick takes one up and none is on the way (an episode's first; with ``prefetch_lead`` 0 every one),
        and the first complete state after that starts it in the background (``Controller.prime``), so that the
        tick takes it up instead of computing it inside the period.
        """
        runtime, adapter = self.runtime, self.adapter
        if runtime is None or adapter is None or self._intervening or not runtime.controller.wants_chunk:
            return
        if not adapter.fresh_since(self._tick_now):
            return  # some streaming input (e.g. the object pose after the joint states) is still the last tick's
        observation = adapter.observation()
        if observation is not None:
            runtime.controller.prime(observation)

    def _on_intervention(self, msg: Bool) -> None:
        if self._intervening and not msg.data and self.runtime is not None:
            # Back from a takeover: the history is stale, start from the present (and the watchdog's clock).
            self.runtime.controller.reset()
            if self.runtime.chain is not None:
                self.runtime.chain.reset()
            if self.stats is not None:
                self.stats.restart()
        self._intervening = bool(msg.data)

    # ------------------------------------------------------------ diagnostics
    def diagnostics(self) -> tuple[bytes, str, dict[str, object]]:
        """``(level, message, values)`` of the node's current state."""
        runtime, adapter, stats = self.runtime, self.adapter, self.stats
        if runtime is None or adapter is None or stats is None:
            return DiagnosticStatus.STALE, "not configured", {}
        chain = runtime.chain
        latched = bool(chain.estop.latched) if chain is not None else bool(self._estop_reason)
        values: dict[str, object] = {
            "policy": str(runtime.policy.policy_dir),
            "env_id": runtime.env_id,
            "active": self._timer is not None,
            "episode": self._episode,
            "estop_latched": latched,
            "intervention": self._intervening,
            "safety": "on" if chain is not None else "off",
            "monitor": "on" if runtime.monitor is not None else "off",
            "monitor_alarm": self._alarm,
            # What the calibrated detector promises about false alarms on successful episodes (robot_rl.monitor).
            "monitor_promise": getattr(getattr(runtime.monitor, "promise", None), "describe", lambda: "")(),
            "notes": "; ".join(runtime.notes),
            "waiting_for": ",".join(adapter.waiting_for()),
            **stats.summary(),
            **(self.realtime.summary() if self.realtime is not None else {}),
            **(self.status.summary() if self.status is not None else {}),
        }
        for name, count in adapter.rejected.items():
            values[f"rejected_{name}"] = count
        check = adapter.stamp_check
        for kind, count in check.counts.items():  # also counted in rejected_<input>
            values[f"refused_{kind}_stamp"] = count
        values["max_state_age_ms"] = 1e3 * check.max_age_s
        values["clock_skew_tolerance_ms"] = 1e3 * check.skew_s
        values["rejected_total"] = sum(adapter.rejected.values())
        values["last_rejection"] = adapter.last_error
        if latched:
            level, message = DiagnosticStatus.ERROR, "e-stop latched"
        elif self._alarm and self._timer is not None:
            level, message = DiagnosticStatus.WARN, "failure monitor alarm"
        elif stats.fallbacks and stats.last_fallback and self._timer is not None:
            level, message = DiagnosticStatus.WARN, f"fallback: {stats.last_fallback}"
        elif runtime.notes or values["rejected_total"]:
            level, message = DiagnosticStatus.WARN, "; ".join(runtime.notes) or "messages refused"
        else:
            level, message = DiagnosticStatus.OK, "running" if self._timer is not None else "inactive"
        return level, message, values

    def publish_diagnostics(self) -> None:
        """Publish ``/diagnostics``."""
        level, message, values = self.diagnostics()
        hardware = self.adapter.hardware_id if self.adapter is not None else ""
        self._diag_pub.publish(
            conv.diagnostic_array(self.get_name(), hardware, level, message, values, self.get_clock().now().to_msg())
        )


def main(args: list[str] | None = None) -> None:
    """``ros2 run robot_rl_ros policy_node --ros-args -p policy:=policies/NAME [-p autostart:=true]``."""
    rclpy.init(args=args)
    node = PolicyNode()

    def autostart() -> None:
        if node.get_parameter("autostart").value:
            node.trigger_configure()
            node.trigger_activate()

    spin_node(node, start=autostart)
