"""Software-in-the-loop driver: episodes of a policy node against the sim bridge, through ROS services only.

Used by the SIL test and ``bench/bench_ros.py`` (and usable from a notebook): per episode it

1. deactivates the policy node (lifecycle ``change_state``),
2. resets the sim bridge (``/sim/reset_episode``; the answer carries the seed),
3. sets the policy node's ``seed`` parameter to that seed (``set_parameters``), so the diffusion
   noise is the one ``robot-rl eval`` draws for that seed,
4. activates the policy node and waits for ``/sim/episode_info`` to report the episode done.

Only standard services and topics are used, so the nodes can run in other processes (or on
another machine) on the same ROS_DOMAIN_ID.
"""

from __future__ import annotations

import json
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from robot_rl_ros.conversions import diagnostic_values


class SilDriver:
    """Drives episodes (see the module docstring).

    Args:
        node: A node of the driver's own (its clients and subscriptions are made on it).
        executor: The executor spinning ``node``.
        policy_node: The policy node's name.
    """

    def __init__(self, node: Node, executor: Any, policy_node: str = "robot_rl_policy") -> None:
        self.node, self.executor = node, executor
        base = f"/{policy_node}"
        self._change = node.create_client(ChangeState, f"{base}/change_state")
        self._get = node.create_client(GetState, f"{base}/get_state")
        self._params = node.create_client(SetParameters, f"{base}/set_parameters")
        self._reset = node.create_client(Trigger, "/sim/reset_episode")
        self.info: dict[str, Any] = {}
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_from = policy_node
        node.create_subscription(String, "/sim/episode_info", self._on_info, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_info(self, msg: String) -> None:
        self.info = json.loads(msg.data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if msg.status and msg.status[0].name == self.diagnostics_from:
            self.diagnostics = diagnostic_values(msg)

    def spin_until(self, done: Any, timeout: float) -> bool:
        """Spin the executor until ``done()`` or ``timeout`` [s]; returns ``done()``."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.005)
        return bool(done())

    def _call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        # 30 s: on a cold, loaded CI machine discovery of a just-started node can lag its first services.
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} did not appear within {timeout} s")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")
        return future.result()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the policy node's and the bridge's services.

        Raises:
            TimeoutError: one did not appear.
        """
        for client in (self._change, self._get, self._params, self._reset):
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {client.srv_name} did not appear within {timeout} s")

    def state(self) -> str:
        """The policy node's lifecycle state label (``unconfigured``, ``inactive``, ``active``...)."""
        return self._call(self._get, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        """Request a lifecycle transition (``lifecycle_msgs.msg.Transition.TRANSITION_*``)."""
        request = ChangeState.Request()
        request.transition.id = transition_id
        return bool(self._call(self._change, request).success)

    def configure(self) -> bool:
        """Configure the policy node (loads the policy)."""
        return self.transition(Transition.TRANSITION_CONFIGURE)

    def set_seed(self, seed: int) -> None:
        """Set the policy node's ``seed`` parameter (used at the next activation)."""
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed))
        result = self._call(self._params, SetParameters.Request(parameters=[Parameter(name="seed", value=value)]))
        if not result.results[0].successful:
            raise RuntimeError(f"setting seed failed: {result.results[0].reason}")

    def reset_sim(self) -> int:
        """Reset the sim bridge to its next seed; returns the seed."""
        return int(json.loads(self._call(self._reset, Trigger.Request()).message)["seed"])

    def run_episode(self, timeout: float = 60.0) -> dict[str, Any]:
        """One episode on the bridge's next seed; returns the final ``/sim/episode_info``.

        Raises:
            TimeoutError: the episode did not end within ``timeout`` [s].
        """
        if self.state() == "active":
            self.transition(Transition.TRANSITION_DEACTIVATE)
        seed = self.reset_sim()
        self.set_seed(seed)
        self.info = {}
        if not self.transition(Transition.TRANSITION_ACTIVATE):
            raise RuntimeError("the policy node refused to activate (see its log)")
        if not self.spin_until(lambda: self.info.get("seed") == seed and self.info.get("done"), timeout):
            raise TimeoutError(f"episode with seed {seed} did not end within {timeout} s: {self.info}")
        info = dict(self.info)
        self.transition(Transition.TRANSITION_DEACTIVATE)
        return info
