"""The quadrotor safety filter: model-level guarantees, exactness on safe commands, config errors, closed loop."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import qpsolvers
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rl.envs.quadrotor.expert import QuadrotorExpert
from robot_rl.envs.registry import register_all
from robot_rl.safety.quadrotor import (
    QuadrotorConstraintCheck,
    QuadrotorFallback,
    QuadrotorSafetyFilter,
    load_quadrotor_safety,
    quadrotor_model_from_mapping,
)
from robot_rl.safety.quadrotor_cbf import (
    GRAVITY,
    acceleration_box,
    in_thrust_set,
    predict_rotation,
    project_rates,
    thrust_polytope,
    tilt_row,
)

YAML = Path(__file__).resolve().parents[2] / "hardware" / "crazyflie.yaml"
SECTION = yaml.safe_load(YAML.read_text())["safety"]
MODEL, FALLBACK_KWARGS = quadrotor_model_from_mapping(SECTION)
TOL = 1e-7
FILTER = QuadrotorSafetyFilter(MODEL)


def random_states(rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    """States around and beyond the geofence: any attitude, fast motion."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    rot = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=1,
    )  # fmt: skip
    pos = rng.uniform([-1.8, -1.8, -0.1], [1.8, 1.8, 2.3], (n, 3))
    vel = rng.uniform(-4.0, 4.0, (n, 3))
    rates = rng.uniform(-8.0, 8.0, (n, 3))
    return [{"position": pos[i], "velocity": vel[i], "rotation": rot[i], "body_rates": rates[i]} for i in range(n)]


def check_output(command: np.ndarray, state: dict[str, np.ndarray]) -> None:
    """Every guarantee of the filter on one (state, command) pair, recomputed from the model."""
    FILTER.reset()  # no disturbance estimate carried between unrelated states
    out, report = FILTER.filter(command, state)
    assert out.shape == (4,) and np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)
    assert report.fallback is None
    m = MODEL
    rot, rates = state["rotation"].tolist(), state["body_rates"].tolist()
    rp = predict_rotation(rot, rates, m.prediction_time)
    b3 = np.array([rp[2], rp[5], rp[8]])
    lo, hi, _, _ = acceleration_box(m, state["position"].tolist(), state["velocity"].tolist())
    lo, hi = np.array(lo), np.array(hi)
    gravity = np.array([0.0, 0.0, GRAVITY])
    t_lo, t_hi = m.thrust_range
    # Thrust and rate limits.
    thrust = 0.5 * (out[0] + 1.0) * m.full_thrust
    assert t_lo - TOL <= thrust <= t_hi + TOL
    w = out[1:] * np.array(m.full_rates)
    assert np.all(np.abs(w) <= np.array(m.max_rates) + TOL)
    # Tilt CBF on roll and pitch, whenever the rate box allows it.
    gx, gy, rhs = tilt_row(m, rp)
    if abs(gx) * m.max_rates[0] + abs(gy) * m.max_rates[1] >= rhs + TOL:
        assert gx * w[0] + gy * w[1] >= rhs - TOL
    # Position CBFs on the implied acceleration, whenever some thrust along the predicted b3 meets them.
    a = thrust / m.mass * b3 - gravity
    t_min, t_max = t_lo, t_hi
    for i in range(3):
        c = b3[i] / m.mass
        if abs(c) < 1e-9:
            if not lo[i] <= -gravity[i] <= hi[i]:
                t_min = math.inf
            continue
        ends = sorted(((lo[i] + gravity[i]) / c, (hi[i] + gravity[i]) / c))
        t_min, t_max = max(t_min, ends[0]), min(t_max, ends[1])
    if t_min <= t_max - 1e-9:
        assert np.all(a >= lo - 1e-6) and np.all(a <= hi + 1e-6), (a, lo, hi)
    # Exactness: a command that meets every constraint passes bit for bit.
    u = np.asarray(command, dtype=np.float64)
    t_u = 0.5 * (u[0] + 1.0) * m.full_thrust
    w_u = u[1:] * np.array(m.full_rates)
    a_u = t_u / m.mass * b3 - gravity
    safe = (
        t_lo <= t_u <= t_hi
        and np.all(np.abs(w_u) <= np.array(m.max_rates))
        and gx * w_u[0] + gy * w_u[1] >= rhs
        and np.all(a_u >= lo)
        and np.all(a_u <= hi)
    )
    if safe:
        assert not report.changed and out.tobytes() == u.tobytes()
    if not report.changed:
        assert out.tobytes() == u.tobytes()
    else:
        assert report.active


def test_random_sweep_model_guarantees() -> None:
    """10,000 random (state, command) pairs: finite, within limits, CBFs met, safe commands untouched."""
    rng = np.random.default_rng(0)
    states = random_states(rng, 10_000)
    commands = rng.uniform(-1.0, 1.0, (len(states), 4))
    for state, command in zip(states, commands, strict=True):
        check_output(command, state)


@pytest.mark.slow
def test_random_sweep_100k() -> None:
    """The sweep above over 100,000 pairs (about 15 s)."""
    rng = np.random.default_rng(1)
    states = random_states(rng, 100_000)
    commands = rng.uniform(-1.0, 1.0, (len(states), 4))
    for state, command in zip(states, commands, strict=True):
        check_output(command, state)


@settings(max_examples=500, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    command=st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=4, max_size=4),
)
def test_property_model_guarantees(seed: int, command: list[float]) -> None:
    check_output(np.array(command), random_states(np.random.default_rng(seed), 1)[0])


def test_safe_commands_pass_bit_for_bit() -> None:
    """Level hover in the middle of the volume: small commands near hover thrust come back unchanged."""
    f = QuadrotorSafetyFilter(MODEL)
    rng = np.random.default_rng(3)
    state = {
        "position": np.array([0.1, -0.2, 1.0]),
        "velocity": np.array([0.2, 0.1, -0.1]),
        "rotation": np.eye(3).ravel(),
        "body_rates": np.zeros(3),
    }
    for _ in range(1000):
        command = np.concatenate(([rng.uniform(-0.3, 0.1)], rng.uniform(-0.5, 0.5, 3))).astype(np.float64)
        command[3] *= 0.5
        out, report = f.filter(command, state)
        assert out is command and not report.changed


def test_filter_changes_unsafe_commands() -> None:
    """Diving at the floor, tilted past the limit, thrust and rates beyond their limits: all corrected."""
    f = QuadrotorSafetyFilter(MODEL)
    state = {
        "position": np.array([0.0, 0.0, 0.4]),
        "velocity": np.array([0.0, 0.0, -2.0]),
        "rotation": np.eye(3).ravel(),
        "body_rates": np.zeros(3),
    }
    out, report = f.filter(np.array([-1.0, 0.0, 0.0, 0.0]), state)
    assert report.changed and "min_altitude" in report.active and out[0] > 0.0
    out, report = f.filter(np.array([0.0, 1.0, 0.0, 1.0]), {**state, "velocity": np.zeros(3)})
    assert {"rate_roll", "rate_yaw"} <= set(report.active)
    assert abs(out[1]) * 6.0 <= MODEL.max_rates[0] + TOL and abs(out[3]) * 3.0 <= MODEL.max_rates[2] + TOL


def test_nonfinite_inputs_fall_back() -> None:
    f = QuadrotorSafetyFilter(MODEL)
    good = {"position": np.array([0, 0, 1.0]), "velocity": np.zeros(3), "rotation": np.eye(3).ravel()}
    good["body_rates"] = np.zeros(3)
    out, report = f.filter(np.array([0.0, np.nan, 0.0, 0.0]), good)
    assert report.fallback == "bad_command" and np.all(np.isfinite(out))
    out, report = f.filter(np.zeros(4), {**good, "velocity": np.array([np.inf, 0, 0])})
    assert report.fallback == "bad_state" and np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)
    fallback = QuadrotorFallback(MODEL)
    assert np.all(np.isfinite(fallback({"position": np.full(3, np.nan)})))


def test_thrust_polytope_is_inside_the_limits() -> None:
    g, h = thrust_polytope(MODEL)
    rng = np.random.default_rng(4)
    f = rng.uniform([-20, -20, 0], [20, 20, 25], (200_000, 3))
    inside = f[np.all(f @ g.T <= h, axis=1)]
    assert len(inside) > 1000
    assert all(in_thrust_set(MODEL, p.tolist()) for p in inside[:5000])


def test_project_rates_matches_a_qp() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        w0 = rng.uniform(-8, 8, 2)
        box = tuple(rng.uniform(0.5, 6, 2))
        row = (*rng.normal(size=2), rng.uniform(-3, 3))
        (wx, wy), met = project_rates(tuple(w0), box, row)
        ref = qpsolvers.solve_qp(
            np.eye(2),
            -w0,
            -np.array([row[:2]]),
            -np.array([row[2]]),
            lb=-np.array(box),
            ub=np.array(box),
            solver="daqp",
        )
        assert met == (ref is not None)
        if ref is not None:
            assert np.allclose([wx, wy], ref, atol=1e-6)


def test_constraint_check_names() -> None:
    check = QuadrotorConstraintCheck(MODEL)
    level = {"velocity": np.zeros(3), "rotation": np.eye(3).ravel(), "body_rates": np.zeros(3)}
    assert check.violations({**level, "position": np.array([0.0, 0.0, 1.0])}) == []
    assert check.violations({**level, "position": np.array([1.6, -1.6, 0.1])}) == [
        "geofence_x_high",
        "geofence_y_low",
        "min_altitude",
    ]
    tilted = np.array([[1, 0, 0], [0, 0.3, -0.954], [0, 0.954, 0.3]]).ravel()  # 72.5 degrees about x
    assert check.violations({**level, "position": np.array([0, 0, 2.1]), "rotation": tilted}) == [
        "geofence_z_high",
        "tilt",
    ]
    assert check.violations({**level, "position": np.array([np.nan, 0, 1])}) == ["state_not_finite"]


# ------------------------------------------------------------------------------------------------ config
def broken(path: str, value: object = None, delete: bool = False) -> dict:
    section = copy.deepcopy(SECTION)
    *parents, key = path.split(".")
    node = section
    for p in parents:
        node = node[p]
    if delete:
        del node[key]
    else:
        node[key] = value
    return section


@pytest.mark.parametrize(
    ("path", "value", "delete", "match"),
    [
        ("geofence.z_max_m", None, True, r"hardware/crazyflie.yaml: safety.geofence.z_max_m is missing"),
        ("cbf.alpha_tilt", None, True, r"safety.cbf.alpha_tilt is missing"),
        ("geofence.x_m", [1.0, -1.0], False, r"safety.geofence.x_m lower \(1\) must be below upper \(-1\)"),
        ("thrust_n", [0.5, 0.1], False, r"safety.thrust_n lower"),
        ("max_body_rates_rad_s", [5.0, -1.0, 2.0], False, r"safety.max_body_rates_rad_s\[1\] must be in"),
        ("max_body_rates_rad_s", [7.0, 5.0, 2.0], False, r"max_body_rates_rad_s\[0\] \(7\) is above vehicle"),
        ("min_altitude_m", 2.5, False, r"safety.min_altitude_m \(2.5\) must be below geofence.z_max_m"),
        ("min_altitude_m", -0.1, False, r"safety.min_altitude_m must be in"),
        ("thrust_n", [0.3, 0.5], False, r"must contain the hover thrust"),
        ("cbf.brake_acc_m_s2.vertical", 0.0, False, r"safety.cbf.brake_acc_m_s2.vertical must be in"),
        ("cbf.margin_m.horizontal", 2.0, False, r"safety.cbf.margin_m leaves no room"),
        ("max_tilt_deg", "high", False, r"safety.max_tilt_deg must be a finite number"),
        ("fallback.mode", "hold", False, r"safety.fallback.mode must be one of \['hover', 'land'\]"),
        ("cbf.alpha_typo", 1.0, False, r"safety.cbf.alpha_typo is not a valid key. Valid keys: \['alpha', "),
        ("speed_limit", 1.0, False, r"safety.speed_limit is not a valid key"),
        ("vehicle", [1, 2], False, r"safety.vehicle must be a mapping"),
        ("robot", "fr3", False, r"safety.robot must be 'crazyflie'"),
    ],
)
def test_config_errors_name_the_key(path: str, value: object, delete: bool, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_quadrotor_safety(broken(path, value, delete))


def test_config_loads() -> None:
    filters, fallback, check = load_quadrotor_safety(SECTION, "x.yaml")
    assert [f.name for f in filters] == ["quadrotor_cbf"] and fallback.name == FALLBACK_KWARGS["mode"]
    assert MODEL.low == (-1.5, -1.5, 0.15) and MODEL.high == (1.5, 1.5, 2.0)
    with pytest.raises(ValueError, match=r"^other.yaml: safety.geofence is missing"):
        load_quadrotor_safety(broken("geofence", delete=True), "other.yaml")


# ----------------------------------------------------------------------------------------------- closed loop
def run_episodes(task: str, seeds: range, safe: bool, expert: bool = False) -> tuple[int, float]:
    """Violation steps and mean success of random (or expert) actions, with or without the filter."""
    register_all()
    env = gym.make(f"robot_rl/Quadrotor{task}-v1")
    unwrapped = env.unwrapped
    filters, _, check = load_quadrotor_safety(SECTION)
    policy = QuadrotorExpert(unwrapped.params, unwrapped.ctrl_dt)
    violations, success = 0, 0.0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        filters[0].reset()
        policy.reset()
        done = False
        while not done:
            action = policy(obs) if expert else rng.uniform(-1.0, 1.0, 4)
            if safe:
                action, _ = filters[0].filter(action, unwrapped.robot_state())
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            violations += bool(check.violations(unwrapped.robot_state()))
        success += info["is_success"] / len(seeds)
    env.close()
    return violations, success


@pytest.mark.parametrize("task", ["Hover", "Waypoint", "Track"])
def test_random_policy_closed_loop(task: str) -> None:
    assert run_episodes(task, range(4), safe=True)[0] == 0
    assert run_episodes(task, range(4), safe=False)[0] > 0


@pytest.mark.parametrize("task", ["Hover", "Waypoint"])
def test_expert_keeps_succeeding(task: str) -> None:
    violations, success = run_episodes(task, range(4), safe=True, expert=True)
    assert violations == 0 and success == run_episodes(task, range(4), safe=False, expert=True)[1] == 1.0


def test_hover_fallback_brakes_inside_the_geofence() -> None:
    register_all()
    env = gym.make("robot_rl/QuadrotorHover-v1")
    unwrapped = env.unwrapped
    filters, fallback, check = load_quadrotor_safety(SECTION)
    for seed in range(3):
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(60):  # random flight first, kept safe by the filter
            env.step(filters[0].filter(rng.uniform(-1, 1, 4), unwrapped.robot_state())[0])
        for _ in range(150):
            _, _, terminated, _, _ = env.step(fallback(unwrapped.robot_state()))
            assert not terminated and not check.violations(unwrapped.robot_state())
        state = unwrapped.robot_state()
        assert np.linalg.norm(state["velocity"]) < 0.05 and state["rotation"][8] > 0.999


def test_the_fallback_obeys_every_rate_limit_under_a_state_fuzz() -> None:
    """20,000 random states (spinning fast about z included): hover and land stay inside max_body_rates_rad_s."""
    rng = np.random.default_rng(20_000)
    limits = np.asarray(MODEL.max_rates) / np.asarray(MODEL.full_rates)  # in action units
    for name in ("hover", "land"):
        fallback = QuadrotorFallback(MODEL, mode=name)
        worst = 0.0
        for _ in range(10_000):
            rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
            state = {
                "position": rng.uniform(-3, 3, 3),
                "velocity": rng.uniform(-5, 5, 3),
                "rotation": rotation.ravel(),
                "body_rates": rng.uniform(-15, 15, 3),
            }
            out = fallback(state)
            assert np.all(np.isfinite(out))
            worst = max(worst, float(np.max(np.abs(out[1:]) - limits)))
        assert worst <= 1e-9, (name, worst)
