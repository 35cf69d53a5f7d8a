"""The safety chain: fallback precedence, filter order, chunk refusal, the Controller hook, the factory, closed loop."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from robot_rl.envs.registry import register_all
from robot_rl.policies.layout import ObsLayout
from robot_rl.runtime import Controller, ControllerConfig
from robot_rl.safety.base import FilterReport
from robot_rl.safety.chain import SafetyChain
from robot_rl.safety.chunk import ChunkValidator
from robot_rl.safety.factory import safety_for_env
from robot_rl.safety.watchdog import EStop, Watchdog

HOME = np.array([0.0, -0.1848, 0.0, -2.4967, 0.0, 2.3119, 0.785])


def franka_state(stamp=None, **overrides):
    s = {
        "observation": np.zeros(25),
        "tcp_pos": np.array([0.45, 0.0, 0.25]),
        "tcp_vel": np.zeros(3),
        "joint_pos": HOME.copy(),
        "joint_vel": np.zeros(7),
        "gripper_width": np.array([0.04]),
    }
    s.update(overrides)
    if stamp is not None:
        s["stamp"] = np.array(stamp)
    return s


class Affine:
    """A test filter: ``a * command + b``; records calls."""

    def __init__(self, name, a=1.0, b=0.0):
        self.name, self.a, self.b, self.calls, self.resets, self.sent = name, a, b, 0, 0, None

    def filter(self, command, state):
        self.calls += 1
        out = self.a * command + self.b
        return out, FilterReport(self.name, changed=not np.array_equal(out, command), active=[self.name])

    def reset(self):
        self.resets += 1

    def commanded(self, command):
        self.sent = command


class Hold:
    name = "hold"

    def command(self, state):
        return np.array([0.0, 0.0, 0.0, -1.0])


def chain_of(*filters, **kwargs):
    kwargs.setdefault("watchdog", Watchdog(0.1, 0.04, 1.5))
    return SafetyChain(list(filters), Hold(), **kwargs)


class TestOrder:
    def test_filters_run_in_order_and_report_in_order(self):
        chain = chain_of(Affine("shift", b=0.1), Affine("halve", a=0.5))
        out, report = chain.filter(np.zeros(4), franka_state(), now=0.0)
        np.testing.assert_allclose(out, [0.05] * 4)
        assert [r.name for r in report.reports] == ["shift", "halve"] and report.active == ["shift", "halve"]
        assert report.changed and report.fallback is None

    def test_a_safe_command_passes_unchanged(self):
        command = np.array([0.1, 0.2, 0.3, 0.4])
        out, report = chain_of(Affine("identity")).filter(command, franka_state(), now=0.0)
        assert np.array_equal(out, command) and not report.changed

    def test_estop_comes_first_and_survives_reset(self):
        estop = EStop()
        first = Affine("f")
        chain = chain_of(first, estop=estop)
        estop.trigger("operator")
        # Even with stale state and a NaN command, the reason is the e-stop.
        out, report = chain.filter(np.full(4, np.nan), franka_state(stamp=-5.0), now=0.0)
        assert report.fallback == "estop: operator" and np.array_equal(out, Hold().command({}))
        assert first.calls == 0 and np.array_equal(first.sent, out)
        chain.reset()
        assert chain.filter(np.zeros(4), franka_state(), now=0.04)[1].fallback == "estop: operator"
        estop.reset()
        assert chain.filter(np.zeros(4), franka_state(), now=0.08)[1].fallback is None

    def test_watchdog_stale_state_and_missed_periods_fall_back(self):
        chain = chain_of(Affine("f"))
        assert chain.filter(np.zeros(4), franka_state(stamp=0.0), now=0.0)[1].fallback is None
        assert chain.filter(np.zeros(4), franka_state(stamp=-0.07), now=0.04)[1].fallback == "stale_state"
        _, report = chain.filter(np.zeros(4), franka_state(stamp=0.3), now=0.32)
        assert report.fallback == "missed_period" and report.watchdog.missed == 6
        assert chain.filter(np.zeros(4), franka_state(stamp=0.36), now=0.36)[1].fallback is None

    def test_nonfinite_state_then_command_fall_back(self):
        chain = chain_of(Affine("f"))
        state = franka_state(joint_vel=np.array([0, 0, np.nan, 0, 0, 0, 0.0]))
        assert chain.filter(np.full(4, np.nan), state, now=0.0)[1].fallback == "nonfinite_state"
        assert chain.filter(np.full(4, np.inf), franka_state(), now=0.04)[1].fallback == "nonfinite_command"

    def test_output_is_always_finite(self):
        chain = chain_of(Affine("broken", a=np.inf))
        out, report = chain.filter(np.ones(4), franka_state(), now=0.0)
        assert np.isfinite(out).all() and report.fallback == "nonfinite_output"

    def test_reset_resets_filters_and_watchdog(self):
        f = Affine("f")
        chain = chain_of(f)
        chain.filter(np.zeros(4), franka_state(), now=0.0)
        chain.reset()
        assert f.resets == 1 and chain.filter(np.zeros(4), franka_state(), now=9.0)[1].fallback is None

    def test_call_matches_the_controllers_filter_protocol(self):
        chain = chain_of(Affine("f", a=2.0))
        out, report = chain(np.full(4, 0.1), franka_state(), SimpleNamespace(now=0.0, step=0, late=False))
        np.testing.assert_allclose(out, 0.2) and report.reports[0].name == "f"


class TestChunks:
    def test_a_refused_chunk_holds_until_a_good_one_arrives(self):
        chain = chain_of(Affine("f"), chunk_validator=ChunkValidator([-1.0] * 4, [1.0] * 4, 1.0, 1.5))
        bad, good = np.zeros((8, 4)), np.zeros((8, 4))
        bad[5, 0] = 2.0
        assert chain.monitor({}, bad, SimpleNamespace(new_chunk=True)) is True
        assert chain.filter(np.zeros(4), franka_state(), now=0.0)[1].fallback == "chunk_rejected"
        assert chain.monitor({}, bad, SimpleNamespace(new_chunk=False)) is True
        assert chain.monitor({}, good, SimpleNamespace(new_chunk=True)) is False
        assert chain.filter(np.zeros(4), franka_state(), now=0.04)[1].fallback is None
        assert chain.check_chunk(bad).steps == [5, 6, 7]

    def test_without_a_validator_check_chunk_says_how_to_get_one(self):
        with pytest.raises(ValueError, match="chunk_validator="):
            chain_of(Affine("f")).check_chunk(np.zeros((4, 4)))

    def test_in_a_controller_the_chain_filters_and_refuses_a_bad_chunk(self):
        chunks = [np.full((4, 4), 0.1), np.array([[0.1] * 4, [0.1] * 4, [3.0] * 4, [0.1] * 4])]

        class Policy:
            layout = ObsLayout(("observation",), ((25,),))
            n_obs_steps, horizon, n_action_steps, action_dim = 1, 4, 4, 4

            def predict(self, history, rng=None):
                return chunks.pop(0)

        chain, _ = safety_for_env("robot_rl/PandaPush-v0")
        controller = Controller(Policy(), ControllerConfig(ctrl_dt=0.04), filters=[chain], monitors=[chain.monitor])
        fallbacks = [controller.step(franka_state(), now=0.04 * t).status.filter_reports[0].fallback for t in range(8)]
        assert fallbacks == [None] * 4 + ["chunk_rejected"] * 4


class TestFactory:
    def test_franka_envs_get_the_fr3_chain(self):
        chain, check = safety_for_env("robot_rl/PandaPickAndPlaceDense-v0")
        assert [f.name for f in chain.filters] == ["franka_cbf_qp"] and chain.check is check
        assert chain.watchdog.ctrl_dt == 0.04 and chain.watchdog.deadline_s == 0.1
        assert check.violations(franka_state()) == []

    def test_quadrotor_envs_get_the_crazyflie_chain(self):
        pytest.importorskip("robot_rl.safety.quadrotor")
        chain, check = safety_for_env("robot_rl/QuadrotorHover-v1")
        assert chain.filters and hasattr(check, "violations") and chain.watchdog.ctrl_dt == 0.02

    def test_a_gym_env_works_as_well_as_its_id(self):
        register_all()
        env = gym.make("robot_rl/PandaReach-v0")
        try:
            chain, _ = safety_for_env(env)
            assert chain.filters[0].name == "franka_cbf_qp"
        finally:
            env.close()

    def test_unknown_env_ids_list_the_valid_ones(self):
        with pytest.raises(ValueError, match=r"Did you mean 'robot_rl/PandaPush-v0'\?.*robot_rl/QuadrotorTrack-v1"):
            safety_for_env("robot_rl/PandaPsuh-v0")
        with pytest.raises(ValueError, match="no safety configuration"):
            safety_for_env("CartPole-v1")

    def test_hardware_dir_selects_another_folder(self, tmp_path):
        with pytest.raises(ValueError, match="no such hardware file"):
            safety_for_env("robot_rl/PandaPush-v0", hardware_dir=tmp_path)
        text = (safety_for_env.__globals__["HARDWARE_DIR"] / "fr3.yaml").read_text()
        (tmp_path / "fr3.yaml").write_text(text.replace("rate_limit: 0.4", "rate_limit: 0.5"))
        chain, _ = safety_for_env("robot_rl/PandaPush-v0", hardware_dir=tmp_path)
        np.testing.assert_array_equal(chain.filters[0].rate, [0.5, 0.5, 0.5])


def closed_loop(safety, episodes=4, seed=0):
    """Violation steps of uniform random actions on PandaPush, through the chain or not."""
    register_all()
    env = gym.make("robot_rl/PandaPush-v0")
    chain, check = safety_for_env("robot_rl/PandaPush-v0")
    rng = np.random.default_rng(seed)
    unwrapped, violations, fallbacks = env.unwrapped, 0, 0
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=episode)
            chain.reset()
            for t in range(50):
                action = rng.uniform(-1.0, 1.0, 4)
                if safety:
                    state = {**obs, **unwrapped.robot_state(), "stamp": np.array(t * 0.04)}
                    action, report = chain.filter(action, state, now=t * 0.04)
                    fallbacks += report.fallback is not None
                obs, *_ = env.step(action)
                violations += bool(check.violations(unwrapped.robot_state()))
    finally:
        env.close()
    return violations, fallbacks


class TestClosedLoop:
    def test_random_actions_break_the_constraints_without_the_filter_and_never_with_it(self):
        unsafe, _ = closed_loop(safety=False)
        safe, fallbacks = closed_loop(safety=True)
        assert unsafe > 0
        assert safe == 0 and fallbacks == 0
