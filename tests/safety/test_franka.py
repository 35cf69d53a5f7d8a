"""The Franka safety filter, constraint check and fallback: hand-computed cases, property tests, a 100k sweep."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from robot_rl.safety.config import load_franka_config
from robot_rl.safety.franka import FrankaConstraintCheck, FrankaFallback, FrankaKinematics, FrankaSafetyFilter

CONFIG = load_franka_config()
HOME = np.array([0.0, -0.1848, 0.0, -2.4967, 0.0, 2.3119, 0.785])
"""The sim's home keyframe [rad]."""
KINEMATICS = FrankaKinematics()
Q_LOW = np.array(CONFIG.joint_limits.position_lower)
Q_HIGH = np.array(CONFIG.joint_limits.position_upper)
QD_MAX = np.array(CONFIG.joint_limits.velocity)
CHANGE = CONFIG.margins.joint_velocity_change * QD_MAX
"""Largest change of a commanded joint velocity per period away from zero [rad/s]."""
S = CONFIG.command.max_displacement
GAMMA, LEAD, RATE = CONFIG.cbf_gamma, CONFIG.velocity_lead_s, np.array(CONFIG.rate_limit)
GAMMA_LOW = np.array([GAMMA, GAMMA, CONFIG.floor_gamma])
"""The bottom face (the table) has its own CBF rate and no velocity lead."""
LEAD_LOW = np.array([LEAD, LEAD, 0.0])
M_WS, M_Q = CONFIG.margins.workspace, CONFIG.margins.joint_position
RESERVE, K = np.array(CONFIG.margins.joint_velocity), CONFIG.margins.joint_velocity_overshoot

LOW = np.array(CONFIG.workspace.low) + M_WS
HIGH = np.array(CONFIG.workspace.high) - M_WS
DT = CONFIG.command.ctrl_dt


def state(p=(0.45, 0.0, 0.25), v=(0.0, 0.0, 0.0), q=HOME, qd=(0.0,) * 7, width=0.08):
    return {
        "tcp_pos": np.array(p, dtype=float),
        "tcp_vel": np.array(v, dtype=float),
        "joint_pos": np.array(q, dtype=float),
        "joint_vel": np.array(qd, dtype=float),
        "gripper_width": np.array([width]),
    }


@pytest.fixture
def filt():
    return FrankaSafetyFilter(CONFIG, KINEMATICS)


def reach(prev, relaxed=False):
    """Reachable commands: within the rate limit of ``prev`` when speeding up or reversing, free towards zero."""
    if relaxed:
        return -np.ones_like(prev), np.ones_like(prev)
    return np.maximum(np.minimum(prev - RATE, 0.0), -1.0), np.minimum(np.maximum(prev + RATE, 0.0), 1.0)


def violations_of(x, s, prev, relaxed, m=None, tol=1e-9, change=True):
    """Hand-written constraint check of one output displacement ``x`` (3,); the names of those it breaks."""
    p, v, q, qd = s["tcp_pos"], s["tcp_vel"], s["joint_pos"], s["joint_vel"]
    broken = []
    if (np.abs(x) > 1.0).any():
        broken.append("box")
    reach_lo, reach_hi = reach(prev, relaxed)
    if not relaxed and ((x < reach_lo - tol) | (x > reach_hi + tol)).any():
        broken.append("rate")
    # Workspace CBF h(p + s x + tau v) >= (1 - gamma) h(p), or braking as hard as one step allows.
    h_high, h_low = HIGH - p, p - LOW
    next_high, next_low = HIGH - (p + S * x + LEAD * v), (p + S * x + LEAD_LOW * v) - LOW
    ok_high = (next_high >= (1 - GAMMA) * h_high - tol) | (x <= reach_lo + tol)
    ok_low = (next_low >= (1 - GAMMA_LOW) * h_low - tol) | (x >= reach_hi - tol)
    if not (ok_high.all() and ok_low.all()):
        broken.append("workspace_cbf")
    m = KINEMATICS.displacement_map(q).copy() if m is None else m
    dq = S * m @ x
    q_hi, q_lo = Q_HIGH - M_Q, Q_LOW + M_Q
    if ((q_hi - (q + dq + LEAD * qd)) < (1 - GAMMA) * (q_hi - q) - tol).any():
        broken.append("joint_upper_cbf")
    if (((q + dq + LEAD * qd) - q_lo) < (1 - GAMMA) * (q - q_lo) - tol).any():
        broken.append("joint_lower_cbf")
    if (np.abs((1 + K) * dq - K * DT * qd) > (1 - RESERVE) * QD_MAX * DT + tol).any():
        broken.append("joint_velocity")
    qd_cmd = dq / DT
    too_fast = (qd_cmd > np.maximum(qd + CHANGE, 0.0) + tol) | (qd_cmd < np.minimum(qd - CHANGE, 0.0) - tol)
    if change and too_fast.any():
        broken.append("joint_velocity_change")
    return broken


class TestHandComputed:
    def test_a_safe_command_passes_unchanged(self, filt):
        command = np.array([0.1, -0.2, 0.3, 0.5])
        filt.previous = np.array([0.1, -0.2, 0.3])
        out, report = filt.filter(command, state())
        assert np.array_equal(out, command) and not report.changed and report.active == []

    def test_rate_limit_caps_the_change_per_step(self, filt):
        out, report = filt.filter(np.array([1.0, 0.0, 0.0, 0.0]), state())
        np.testing.assert_array_equal(out, [0.4, 0.0, 0.0, 0.0])  # previous 0 at reset, rate 0.4
        assert report.changed and report.active == ["rate_x"]

    def test_slowing_down_is_free_but_reversing_is_rate_limited(self, filt):
        filt.previous = np.array([0.8, 0.8, -0.2])
        out, report = filt.filter(np.array([-0.6, 0.1, 0.5, 0.0]), state())
        # x stops at zero this step (its reversal waits), y slows freely, z reverses by the rate limit (0.4) only.
        np.testing.assert_allclose(out, [0.0, 0.1, 0.2, 0.0])
        assert report.active == ["rate_x", "rate_z"]

    def test_the_table_face_is_a_plain_clip_at_the_margin(self, filt):
        # z 0.03 m, table at 0 + 0.01 margin, floor_gamma 1, no lead: x_z >= -(0.03 - 0.01) / 0.05 = -0.4.
        filt.previous = np.array([0.0, 0.0, -0.8])
        out, report = filt.filter(np.array([0.0, 0.0, -1.0, 0.0]), state(p=(0.45, 0.0, 0.03), v=(0, 0, -1.0)))
        assert out[2] == pytest.approx(-0.4, abs=1e-12) and report.active == ["tcp_z_low"]

    def test_a_too_fast_command_is_scaled_along_its_direction(self, filt):
        x_nom = np.array([0.9, -0.7, -0.9])
        filt.previous = x_nom.copy()
        out, report = filt.filter(np.array([*x_nom, 0.0]), state())
        assert any(name.endswith(("_velocity_pos", "_velocity_neg")) for name in report.active)
        np.testing.assert_allclose(np.cross(out[:3], x_nom), 0.0, atol=1e-12)
        assert 0.0 < out[0] / x_nom[0] < 1.0

    def test_gripper_entry_is_clipped_to_the_action_box(self, filt):
        out, report = filt.filter(np.array([0.0, 0.0, 0.0, 3.0]), state())
        np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1.0])
        assert report.changed and report.active == ["action_box"]

    def test_workspace_cbf_bound_by_hand(self, filt):
        # z 0.47 m, top face 0.50 - 0.01 margin: x_z <= 0.4 * 0.02 / 0.05 = 0.16.
        filt.previous = np.array([0.0, 0.0, 0.3])
        out, report = filt.filter(np.array([0.0, 0.0, 0.5, 0.0]), state(p=(0.45, 0.0, 0.47)))
        assert out[2] == pytest.approx(0.16, abs=1e-12)
        assert report.active == ["tcp_z_high"]

    def test_velocity_lead_tightens_the_bound(self, filt):
        # Moving up at 0.5 m/s: x_z <= (0.4 * 0.02 - 0.02 * 0.5) / 0.05 = -0.04.
        filt.previous = np.array([0.0, 0.0, 0.3])
        out, _ = filt.filter(np.array([0.0, 0.0, 0.5, 0.0]), state(p=(0.45, 0.0, 0.47), v=(0.0, 0.0, 0.5)))
        assert out[2] == pytest.approx(-0.04, abs=1e-12)

    def test_far_outside_the_box_brakes_at_the_rate_limit(self, filt):
        # 0.11 m above the kept region: the CBF asks for x_z <= -0.88, one step can give -0.4 from rest.
        out, report = filt.filter(np.array([0.0, 0.0, 0.0, 0.0]), state(p=(0.45, 0.0, 0.60)))
        assert out[2] == pytest.approx(-0.4) and report.active == ["tcp_z_high"]

    def test_joint_limit_cbf_binds_near_the_joint4_limit(self, filt):
        q = HOME.copy()
        q[3] = -0.25  # 0.098 rad below the FR3 upper limit, 0.048 rad inside the margin
        m = KINEMATICS.displacement_map(q).copy()
        x_nom = 0.3 * m[3] / np.linalg.norm(m[3])  # straight up joint 4's gradient
        filt.previous = x_nom.copy()
        out, report = filt.filter(np.array([*x_nom, 0.0]), state(q=q))
        assert report.active == ["fr3_joint4_upper"]
        # s M_4 x = gamma (q_high - margin - q_4) = 0.4 * 0.0482 (to the solver's 1e-5 slack).
        assert S * m[3] @ out[:3] == pytest.approx(0.4 * (-0.1518 - 0.05 + 0.25), abs=2e-5)
        # The projection moves along the gradient only.
        np.testing.assert_allclose(np.cross(out[:3], x_nom), 0.0, atol=1e-9)
        assert violations_of(out[:3], state(q=q), filt.previous, relaxed=False) == []

    def test_displacement_map_moves_the_tcp_by_the_displacement(self):
        # Forward kinematics after the joint step s M x lands s x away (first order; 1 mm steps).
        for x in np.eye(3) * 0.02:
            dq = KINEMATICS.displacement_map(HOME) @ (0.05 * x)
            moved = KINEMATICS.tcp_position(HOME + dq) - KINEMATICS.tcp_position(HOME)
            np.testing.assert_allclose(moved, 0.05 * x, atol=2e-5)

    def test_nonfinite_command_holds(self, filt):
        out, report = filt.filter(np.array([np.nan, 0.0, 0.0, 0.0]), state(width=0.04))
        np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.0])  # width 0.04 of 0.08 -> gripper 0
        assert report.fallback == "nonfinite_command"

    def test_nonfinite_state_holds(self, filt):
        out, report = filt.filter(np.array([0.1, 0.0, 0.0, 0.0]), state(v=(np.inf, 0.0, 0.0), width=0.08))
        np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 1.0])
        assert report.fallback == "nonfinite_state"

    def test_infeasible_joint_rows_hold_and_say_so(self, filt):
        q = HOME.copy()
        q[3] = 0.6  # far past joint 4's upper limit: the CBF asks for a step back no displacement can give
        out, report = filt.filter(np.array([0.2, 0.0, 0.0, 0.0]), state(q=q))
        assert report.fallback == "infeasible" and np.array_equal(out[:3], np.zeros(3))

    def test_missing_state_key_names_the_keys(self, filt):
        with pytest.raises(ValueError, match="lacks 'joint_vel'"):
            filt.filter(np.zeros(4), {k: v for k, v in state().items() if k != "joint_vel"})

    def test_wrong_command_shape_is_refused(self, filt):
        with pytest.raises(ValueError, match=r"shape \(4,\)"):
            filt.filter(np.zeros(3), state())


class TestFallbackAndCheck:
    def test_hold_keeps_the_gripper_width(self):
        fallback = FrankaFallback(CONFIG)
        np.testing.assert_allclose(fallback.command(state(width=0.02)), [0.0, 0.0, 0.0, -0.5])
        np.testing.assert_array_equal(fallback.command(state(width=np.nan)), [0.0, 0.0, 0.0, -1.0])
        np.testing.assert_array_equal(fallback.command({}), [0.0, 0.0, 0.0, -1.0])

    def test_hold_obeys_the_command_limits_under_a_state_fuzz(self):
        """20,000 random states (widths past the hand's range, negative, non-finite, missing): a finite hold."""
        rng = np.random.default_rng(20_001)
        fallback = FrankaFallback(CONFIG)
        widths = [np.nan, np.inf, -np.inf, -1.0, 1e308, None]
        for k in range(20_000):
            width = widths[k % len(widths)] if k % 4 == 0 else float(rng.uniform(-0.2, 0.3))
            measured = state(
                p=rng.uniform(-2, 2, 3), v=rng.uniform(-5, 5, 3), q=rng.uniform(-4, 4, 7), qd=rng.uniform(-9, 9, 7)
            )
            if width is None:
                del measured["gripper_width"]
            else:
                measured["gripper_width"] = np.array([width])
            out = fallback.command(measured)
            assert out.shape == (4,) and np.all(np.isfinite(out)), (k, out)
            assert np.all(out[:3] == 0.0) and -1.0 <= out[3] <= 1.0, (k, out)

    def test_check_names_each_broken_constraint(self):
        check = FrankaConstraintCheck(CONFIG)
        assert check.violations(state()) == []
        assert check.violations(state(p=(0.45, 0.0, -0.001))) == ["tcp_z_low"]
        assert check.violations(state(p=(0.9, 0.31, 0.25))) == ["tcp_x_high", "tcp_y_high"]
        q = HOME.copy()
        q[3] = -0.1
        assert check.violations(state(q=q)) == ["fr3_joint4_upper"]
        qd = np.zeros(7)
        qd[4] = -5.3
        assert check.violations(state(qd=qd)) == ["fr3_joint5_velocity"]
        assert check.violations(state(p=(np.nan, 0.0, 0.0))) == ["nonfinite_state"]


finite = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def scenarios(draw):
    """A command (with out-of-box and non-finite entries now and then), a state and a previous command."""
    special = st.sampled_from([np.nan, np.inf, -np.inf, 3.0, -2.5])
    command = [draw(st.one_of(st.floats(-1.5, 1.5), special) if draw(st.integers(0, 9)) == 0 else finite)]
    command += [draw(st.floats(-1.5, 1.5)) for _ in range(3)]
    command = np.array(command)[np.array(draw(st.permutations(range(4))))]
    q = HOME + np.array([draw(st.floats(-0.8, 0.8)) for _ in range(7)])
    q = np.clip(q, Q_LOW - 0.05, Q_HIGH + 0.05)
    p = np.array([draw(st.floats(0.2, 0.95)), draw(st.floats(-0.45, 0.45)), draw(st.floats(-0.05, 0.6))])
    v = np.array([draw(st.floats(-1.5, 1.5)) for _ in range(3)])
    qd = np.array([draw(st.floats(-1.2, 1.2)) for _ in range(7)]) * QD_MAX
    prev = np.array([draw(finite) for _ in range(3)])
    return command, state(p, v, q, qd, draw(st.floats(0.0, 0.08))), prev


class TestProperties:
    @settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def test_every_output_is_finite_and_meets_every_constraint(self, scenario):
        command, s, prev = scenario
        filt = FrankaSafetyFilter(CONFIG, KINEMATICS)
        filt.previous = prev.copy()
        out, report = filt.filter(command, s)
        assert out.shape == (4,) and np.isfinite(out).all() and (np.abs(out) <= 1.0).all()
        if report.fallback is not None:
            assert np.array_equal(out[:3], np.zeros(3))
            return
        relaxed, change = "rate_relaxed" in report.active, "velocity_change_relaxed" not in report.active
        assert violations_of(out[:3], s, prev, relaxed=relaxed, change=change) == []
        assert report.changed == (not np.array_equal(out, command))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(finite, min_size=3, max_size=3), st.lists(st.floats(-0.2, 0.2), min_size=4, max_size=4))
    def test_safe_commands_come_back_bit_identical(self, prev, delta):
        prev = np.array(prev) * 0.3
        command = np.array([*(prev + np.array(delta[:3])), delta[3]])
        s = state()
        assume(violations_of(command[:3], s, prev, relaxed=False, tol=0.0) == [])
        filt = FrankaSafetyFilter(CONFIG, KINEMATICS)
        filt.previous = prev
        out, report = filt.filter(command, s)
        assert out.tobytes() == command.tobytes() and not report.changed


class TestSweep:
    def test_100k_random_commands_and_states_all_meet_the_constraints(self):
        """One vectorized sweep: 100,000 (command, state, previous command) triples through ``filter_batch``.

        Joint configurations come from a pool of 5,000 (the Jacobian is the costly part); every other entry is
        drawn per triple. A sample of rows is checked against the per-step ``filter``.
        """
        rng = np.random.default_rng(20261121)
        n, pool = 100_000, 5_000
        q_pool = np.clip(HOME + rng.normal(0.0, 0.3, (pool, 7)), Q_LOW - 0.05, Q_HIGH + 0.05)
        maps = np.stack([KINEMATICS.displacement_map(q).copy() for q in q_pool])
        pick = rng.integers(0, pool, n)
        states = {
            "tcp_pos": rng.uniform([0.2, -0.45, -0.05], [0.95, 0.45, 0.6], (n, 3)),
            "tcp_vel": rng.normal(0.0, 0.4, (n, 3)),
            "joint_pos": q_pool[pick],
            "joint_vel": rng.normal(0.0, 0.3, (n, 7)) * QD_MAX,
            "gripper_width": rng.uniform(0.0, 0.08, (n, 1)),
        }
        prev = rng.uniform(-1.0, 1.0, (n, 3))
        commands = rng.uniform(-1.3, 1.3, (n, 4))
        smooth = rng.random(n) < 0.5  # half the commands move on smoothly from the previous one
        commands[smooth, :3] = np.clip(prev[smooth] + rng.normal(0.0, 0.1, (smooth.sum(), 3)), -1.0, 1.0) * 0.5
        prev[smooth] *= 0.5
        commands[rng.random((n, 4)) < 0.002] = np.nan
        filt = FrankaSafetyFilter(CONFIG, KINEMATICS)
        out, held, relaxed = filt.filter_batch(commands, states, prev)

        assert np.isfinite(out).all() and (np.abs(out) <= 1.0).all()
        nonfinite = ~np.isfinite(commands).all(axis=1)
        assert held[nonfinite].all() and (out[held, :3] == 0.0).all()
        ok = ~held
        x, p, v, q, qd = out[ok, :3], *(states[k][ok] for k in ("tcp_pos", "tcp_vel", "joint_pos", "joint_vel"))
        pv, rel, keep_change = prev[ok], relaxed[ok] > 0, relaxed[ok] < 2
        reach_lo, reach_hi = reach(pv)
        reach_lo[rel], reach_hi[rel] = -1.0, 1.0
        assert ((x >= reach_lo - 1e-12) & (x <= reach_hi + 1e-12)).all()
        nxt_high, nxt_low = p + S * x + LEAD * v, p + S * x + LEAD_LOW * v
        assert (((HIGH - nxt_high) >= (1 - GAMMA) * (HIGH - p) - 1e-12) | (x <= reach_lo + 1e-12)).all()
        assert (((nxt_low - LOW) >= (1 - GAMMA_LOW) * (p - LOW) - 1e-12) | (x >= reach_hi - 1e-12)).all()
        dq = S * np.einsum("nij,nj->ni", maps[pick[ok]], x)
        q_hi, q_lo = Q_HIGH - M_Q, Q_LOW + M_Q
        assert ((q_hi - (q + dq + LEAD * qd)) >= (1 - GAMMA) * (q_hi - q) - 1e-12).all()
        assert (((q + dq + LEAD * qd) - q_lo) >= (1 - GAMMA) * (q - q_lo) - 1e-12).all()
        assert (np.abs((1 + K) * dq - K * DT * qd) <= (1 - RESERVE) * QD_MAX * DT + 1e-12).all()
        assert (dq <= DT * np.maximum(qd + CHANGE, 0.0) + 1e-12)[keep_change].all()
        assert (dq >= DT * np.minimum(qd - CHANGE, 0.0) - 1e-12)[keep_change].all()
        # Minimally invasive: rows the filter left alone were safe as sent, and some rows were left alone.
        same = (out == np.clip(commands, -1.0, 1.0)).all(axis=1) & ok
        assert 0.05 < same.mean() < 0.95 and 0.05 < (~same & ok).mean()

        for i in rng.choice(n, 300, replace=False):
            filt.previous = prev[i].copy()
            one, report = filt.filter(commands[i], {k: a[i] for k, a in states.items()})
            np.testing.assert_allclose(one, out[i], atol=1e-9)
            assert (report.fallback is not None) == held[i]


class TestConfigDriven:
    def test_a_wider_margin_keeps_the_command_further_in(self):
        wide = dataclasses.replace(CONFIG, margins=dataclasses.replace(CONFIG.margins, workspace=0.03))
        filt = FrankaSafetyFilter(wide, KINEMATICS)
        filt.previous = np.array([0.0, 0.0, 0.3])
        out, _ = filt.filter(np.array([0.0, 0.0, 0.5, 0.0]), state(p=(0.45, 0.0, 0.44)))
        assert out[2] == pytest.approx(0.4 * (0.47 - 0.44) / 0.05, abs=1e-12)
