"""The runtime Controller: receding horizon as ChunkedActor, blending, prefetch, hooks, clock, reset."""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from robot_rl.envs.registry import make
from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.policies.layout import ChunkedActor, ObsLayout
from robot_rl.runtime import Controller, ControllerConfig, OnnxPolicy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PUSH = POLICIES / "panda_push_diffusion"
WAYPOINT = POLICIES / "quadrotor_waypoint_diffusion"


class FakePolicy:
    """Chunk k (the k-th predict call) holds ``10 * k + j`` at index j (every action dim), unless ``chunks`` given.

    Records the histories it was called with; with ``gate``, calls after the first wait for it.
    """

    def __init__(self, horizon=8, n_action_steps=4, chunks=None, gate=None):
        self.layout = ObsLayout(("observation",), ((2,),))
        self.n_obs_steps, self.horizon, self.n_action_steps, self.action_dim = 2, horizon, n_action_steps, 2
        self.chunks, self.gate = chunks, gate
        self.histories = []

    def predict(self, obs_history, rng=None):
        k = len(self.histories)
        self.histories.append(np.array(obs_history))
        if self.gate is not None and k > 0:
            assert self.gate.wait(10.0)
        if self.chunks is not None:
            return np.array(self.chunks[k], dtype=np.float64)
        return np.repeat((10.0 * k + np.arange(self.horizon))[:, None], self.action_dim, axis=1)


def obs(value=0.0):
    return {"observation": np.full(2, float(value))}


def run_fake(controller, steps, dt=0.02):
    outputs = [controller.step(obs(t), t * dt) for t in range(steps)]
    return np.array([o.action[0] for o in outputs]), [o.status for o in outputs]


@pytest.fixture(scope="module")
def streams():
    """Seed -> (policy, observations of a QuadrotorWaypoint episode under blend none, 200 steps at most)."""
    return {seed: recorded_stream(WAYPOINT, seed) for seed in (1_000_000, 1_000_001, 1_000_002, 1_000_003)}


def recorded_stream(policy_dir, seed, max_steps=200):
    """Observations of one closed-loop episode under blend none (replayed open loop to compare modes)."""
    policy = OnnxPolicy(policy_dir)
    env = make(policy.metadata.env_id)
    controller = Controller(policy)
    observation, _ = env.reset(seed=seed)
    controller.reset(seed)
    stream, done = [], False
    while not done and len(stream) < max_steps:
        stream.append(observation)
        output = controller.step(observation, len(stream) * controller.ctrl_dt)
        observation, _, terminated, truncated, _ = env.step(output.action)
        done = terminated or truncated
    env.close()
    return policy, stream


class TestReceding:
    def test_blend_none_gives_the_chunked_actor_actions_for_the_same_seed(self):
        policy = OnnxPolicy(PUSH)
        env = make(policy.metadata.env_id)
        actor, controller = ChunkedActor(policy), Controller(policy)
        for seed in (1_000_000, 1_000_001):
            observation, _ = env.reset(seed=seed)
            actor.reset(seed)
            controller.reset(seed)
            done, t = False, 0
            while not done:
                expected = actor(observation)
                output = controller.step(observation, t * controller.ctrl_dt)
                np.testing.assert_array_equal(output.action, expected)
                assert output.status.new_chunk == (t % policy.n_action_steps == 0)
                observation, _, terminated, truncated, _ = env.step(expected)
                done, t = terminated or truncated, t + 1
        env.close()

    def test_status_counts_chunks_steps_and_queue(self):
        actions, status = run_fake(Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02)), 9)
        assert actions.tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20]
        assert [s.chunk_index for s in status] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
        assert [s.chunk_step for s in status] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
        assert [s.queue_length for s in status] == [3, 2, 1, 0, 3, 2, 1, 0, 3]
        assert [s.new_chunk for s in status] == [s.computed_chunk for s in status] == [t % 4 == 0 for t in range(9)]
        assert all(s.inference_s is not None for s in status if s.new_chunk)
        assert all(s.blend_weight == 1.0 and s.active_chunks == 1 for s in status)


class TestBlending:
    def test_crossfade_weights_by_hand(self):
        # horizon 8, a new chunk every 4 steps, cross-fade over 2: weights 1/3, 2/3 on the new chunk.
        config = ControllerConfig(blend="crossfade", crossfade_steps=2, ctrl_dt=0.02)
        actions, status = run_fake(Controller(FakePolicy(), config), 10)
        expected = [0, 1, 2, 3, (2 * 4 + 10) / 3, (5 + 2 * 11) / 3, 12, 13, (2 * 14 + 20) / 3, (15 + 2 * 21) / 3]
        np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-12)
        assert [round(s.blend_weight, 3) for s in status[3:6]] == [1.0, 0.333, 0.667]

    def test_ensemble_weights_by_hand(self):
        # A chunk every 2 steps, horizon 8: steps 0-1 see chunk 0; 2-3 chunks 0, 1; 4-5 chunks 0-2; 6-7 chunks 0-3.
        for decay, weights in ((0.0, [1, 1, 1, 1]), (np.log(2) / 2, [1, 0.5, 0.25, 0.125])):
            config = ControllerConfig(blend="ensemble", replan_every=2, ensemble_decay=decay, ctrl_dt=0.02)
            actions, status = run_fake(Controller(FakePolicy(), config), 9)
            for t in range(9):
                ks = [k for k in range(5) if 2 * k <= t < 2 * k + 8]
                w = np.array(weights[: len(ks)])
                values = np.array([10 * k + t - 2 * k for k in ks])
                assert actions[t] == pytest.approx(w @ values / w.sum(), abs=1e-12)
                assert status[t].active_chunks == len(ks)
                assert status[t].blend_weight == pytest.approx(w[-1] / w.sum())

    def test_blending_shrinks_the_largest_jump_between_disagreeing_chunks(self):
        # Smooth chunks (ramps) that disagree with each other by random offsets.
        rng = np.random.default_rng(0)
        ramps = [np.repeat((o + 0.01 * np.arange(8))[:, None], 2, axis=1) for o in rng.uniform(-1, 1, 40)]
        largest = {}
        for blend in ("none", "ensemble", "crossfade"):
            config = ControllerConfig(blend=blend, ctrl_dt=0.02, replan_every=2, crossfade_steps=4)
            actions, _ = run_fake(Controller(FakePolicy(chunks=ramps), config), 40)
            largest[blend] = np.abs(np.diff(actions)).max()
            assert np.abs(actions).max() <= 1.1  # convex combinations of chunk actions in [-1, 1.07]
        assert largest["ensemble"] < 0.6 * largest["none"]
        assert largest["crossfade"] < 0.6 * largest["none"]

    def test_blended_commands_stay_within_the_chunks_and_jump_less_on_average_at_boundaries(self, streams):
        # The same recorded observations replayed under each mode (a shipped policy, several episodes).
        mean_jump = {}
        for blend in ("none", "ensemble", "crossfade"):
            jumps = []
            for seed in (1_000_000, 1_000_001, 1_000_002, 1_000_003):
                policy, stream = streams[seed]
                chunks = []
                recording = _Recording(policy, chunks)
                controller = Controller(recording, ControllerConfig(blend=blend))
                controller.reset(seed)
                commands = []
                for t, observation in enumerate(stream):
                    recording.step = t
                    commands.append(controller.step(observation, t * controller.ctrl_dt).action)
                    candidates = np.array([c[t - s] for s, c in chunks if 0 <= t - s < policy.horizon])
                    assert np.all(commands[-1] >= candidates.min(0) - 1e-12)
                    assert np.all(commands[-1] <= candidates.max(0) + 1e-12)
                commands = np.array(commands)
                jumps += [np.abs(commands[t] - commands[t - 1]).max() for t in range(8, len(commands), 8)]
            mean_jump[blend] = float(np.mean(jumps))
        assert mean_jump["ensemble"] < mean_jump["none"]
        assert mean_jump["crossfade"] < mean_jump["none"]


class _Recording:
    """A policy that records each chunk with the step it was computed at."""

    def __init__(self, policy, chunks):
        self._policy, self._chunks, self.step = policy, chunks, 0

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def predict(self, history, rng=None):
        chunk = self._policy.predict(history, rng)
        self._chunks.append((self.step, chunk))
        return chunk


class TestPrefetch:
    def test_a_prefetched_chunk_is_entered_at_its_own_time(self):
        # Chunk 1 is computed at step 2 (lead 2) from observation 2 and takes effect at step 4 at index 2.
        policy = FakePolicy()
        config = ControllerConfig(prefetch=True, prefetch_sync=True, lead=2, ctrl_dt=0.02)
        actions, status = run_fake(Controller(policy, config), 9)
        assert actions.tolist() == [0, 1, 2, 3, 12, 13, 14, 15, 22]
        assert [s.chunk_step for s in status[3:6]] == [3, 2, 3]
        assert [h[-1, 0] for h in policy.histories] == [0, 2, 6]
        assert [s.computed_chunk for s in status[:7]] == [True, False, True, False, False, False, True]

    def test_thread_gives_the_same_actions_as_sync_mode(self):
        policy = OnnxPolicy(WAYPOINT)
        env = make(policy.metadata.env_id)
        actions = {}
        for sync in (True, False):
            with Controller(policy, ControllerConfig(prefetch=True, prefetch_sync=sync, lead=3)) as controller:
                observation, _ = env.reset(seed=1_000_000)
                controller.reset(1_000_000)
                actions[sync] = []
                for t in range(60):
                    output = controller.step(observation, t * controller.ctrl_dt)
                    assert not output.status.stale and not output.status.waited
                    actions[sync].append(output.action)
                    controller.sync()  # the thread finishes before the chunk is due
                    observation, *_ = env.step(output.action)
        env.close()
        np.testing.assert_array_equal(actions[True], actions[False])

    def test_a_late_chunk_is_bridged_by_the_previous_one_and_then_entered_at_its_own_time(self):
        gate = threading.Event()
        controller = Controller(FakePolicy(gate=gate), ControllerConfig(prefetch=True, lead=2, ctrl_dt=0.02))
        first = [controller.step(obs(t), 0.02 * t) for t in range(6)]
        assert [o.action[0] for o in first] == [0, 1, 2, 3, 4, 5]  # chunk 1 (started at step 2) is still running
        assert [o.status.stale for o in first] == [False] * 4 + [True, True]
        assert first[5].status.prefetching
        gate.set()
        controller.sync()
        late = controller.step(obs(6), 0.12)
        assert late.status.new_chunk and late.action[0] == 14  # chunk 1 at index 6 - 2
        assert controller.step(obs(7), 0.14).action[0] == 15
        controller.close()

    def test_the_step_waits_when_the_previous_chunk_runs_out(self):
        gate = threading.Event()
        controller = Controller(FakePolicy(gate=gate), ControllerConfig(prefetch=True, lead=2, ctrl_dt=0.02))
        outputs = [controller.step(obs(t), 0.02 * t) for t in range(8)]
        assert [o.action[0] for o in outputs] == list(range(8))
        threading.Timer(0.05, gate.set).start()
        output = controller.step(obs(8), 0.16)
        assert output.status.waited and output.status.new_chunk and output.action[0] == 16
        controller.close()

    def test_prime_starts_the_first_chunk_before_the_first_step(self):
        # The primed chunk is step 0's, computed from the priming observation (padded to a full history).
        policy = FakePolicy()
        controller = Controller(policy, ControllerConfig(prefetch=True, lead=2, ctrl_dt=0.02))
        assert controller.prime(obs(-5))
        assert not controller.prime(obs(-6))  # one chunk at most on the way
        controller.sync()
        outputs = []
        for t in range(5):
            outputs.append(controller.step(obs(t), 0.02 * t))
            controller.sync()  # the thread finishes before the chunk is due
        actions, status = [o.action[0] for o in outputs], [o.status for o in outputs]
        assert actions == [0, 1, 2, 3, 12]
        assert status[0].new_chunk and not status[0].computed_chunk and not status[0].waited
        assert [h[:, 0].tolist() for h in policy.histories[:2]] == [[-5, -5], [1, 2]]
        assert not controller.prime(obs(0))  # past the episode's first step
        controller.reset()
        assert controller.prime(obs(3))  # a new episode primes again
        controller.close()

    def test_the_first_step_waits_for_a_primed_chunk_still_running(self):
        gate = threading.Event()
        policy = FakePolicy(gate=gate)
        controller = Controller(policy, ControllerConfig(prefetch=True, lead=2, ctrl_dt=0.02))
        controller.step(obs(0), 0.0)
        controller.reset()
        assert controller.prime(obs(1))  # the policy's second call: held by the gate
        threading.Timer(0.05, gate.set).start()
        output = controller.step(obs(1), 0.0)
        assert output.status.waited and output.status.new_chunk and output.action[0] == 10
        controller.close()

    def test_prime_draws_the_noise_the_first_step_would(self):
        policy = OnnxPolicy(PUSH)
        env = make(policy.metadata.env_id)
        observation, _ = env.reset(seed=1_000_000)
        env.close()
        plain = Controller(policy)
        plain.reset(1_000_000)
        with Controller(policy, ControllerConfig(prefetch=True)) as primed:
            primed.reset(1_000_000)
            assert primed.prime(observation)
            np.testing.assert_array_equal(primed.step(observation, 0.0).action, plain.step(observation, 0.0).action)

    def test_lead_0_primes_every_chunk_from_the_step_s_observation_and_matches_no_prefetch(self):
        # The ROS node's default: each chunk started (in the thread) from the newest state before its step.
        policy = OnnxPolicy(PUSH)
        env = make(policy.metadata.env_id)
        actions = {}
        for prefetch in (False, True):
            with Controller(policy, ControllerConfig(prefetch=prefetch, lead=0)) as controller:
                observation, _ = env.reset(seed=1_000_001)
                controller.reset(1_000_001)
                actions[prefetch], primed = [], 0
                for t in range(40):
                    if controller.wants_chunk:
                        primed += controller.prime(observation)
                        controller.sync()
                    output = controller.step(observation, t * controller.ctrl_dt)
                    assert not (prefetch and output.status.computed_chunk)
                    actions[prefetch].append(output.action)
                    observation, *_ = env.step(output.action)
            if prefetch:
                assert primed == 10  # 40 steps, 4 actions per chunk
        env.close()
        np.testing.assert_array_equal(actions[True], actions[False])

    def test_prime_needs_prefetch(self):
        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02))
        assert not controller.prime(obs(0))
        assert controller.step(obs(0), 0.0).status.computed_chunk


class TestHooks:
    def test_filters_run_in_order_and_their_reports_are_in_the_status(self):
        seen = []

        def shift(action, observation, status):
            seen.append(("shift", status.step))
            return action + 1.0, {"shifted": 1.0}

        def halve(action, observation, status):
            seen.append(("halve", status.step))
            return action / 2.0, "halved"

        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02), filters=[shift, halve])
        outputs = [controller.step(obs(t), 0.02 * t) for t in range(2)]
        assert [o.action[0] for o in outputs] == [0.5, 1.0]  # (a + 1) / 2, not a / 2 + 1
        assert [o.policy_action[0] for o in outputs] == [0.0, 1.0]
        assert outputs[1].status.filter_reports == [{"shifted": 1.0}, "halved"]
        assert seen == [("shift", 0), ("halve", 0), ("shift", 1), ("halve", 1)]

    def test_monitors_see_the_chunk_and_raise_the_alarm(self):
        class NewChunkMonitor:
            name = "new_chunk"

            def __init__(self):
                self.chunks = []

            def __call__(self, observation, chunk, status):
                self.chunks.append(chunk[0, 0])
                return status.new_chunk

        monitor = NewChunkMonitor()
        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02), monitors=[monitor, lambda o, c, s: False])
        status = [controller.step(obs(t), 0.02 * t).status for t in range(5)]
        assert [s.alarm for s in status] == [True, False, False, False, True]
        assert status[0].alarms == ["new_chunk"] and status[1].alarms == []
        assert monitor.chunks == [0, 0, 0, 0, 10]

    def test_no_hooks_by_default(self):
        status = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02)).step(obs(), 0.0).status
        assert status.filter_reports == [] and status.alarms == [] and not status.alarm


class TestClockAndReset:
    def test_a_step_more_than_one_and_a_half_periods_after_the_last_is_late(self):
        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02))
        times = [10.0, 10.02, 10.049, 10.08, 10.1]  # periods 0.02, 0.029, 0.031, 0.02
        status = [controller.step(obs(), now).status for now in times]
        assert [s.late for s in status] == [False, False, False, True, False]
        assert status[0].period_s is None
        assert [round(s.period_s, 3) for s in status[1:]] == [0.02, 0.029, 0.031, 0.02]

    def test_the_control_period_comes_from_the_policy_card(self):
        assert Controller(OnnxPolicy(WAYPOINT)).ctrl_dt == 0.02
        with pytest.raises(ValueError, match="ctrl_dt"):
            Controller(FakePolicy())

    def test_reset_restarts_history_chunks_and_clock(self):
        policy = FakePolicy()
        controller = Controller(policy, ControllerConfig(ctrl_dt=0.02))
        for t in range(6):
            controller.step(obs(t + 1), 0.02 * t)
        controller.reset(seed=3)
        output = controller.step(obs(7), 5.0)
        np.testing.assert_array_equal(policy.histories[-1], [[7, 7], [7, 7]])  # padded with the new observation
        assert output.status.step == 0 and output.status.chunk_index == 0 and output.status.new_chunk
        assert output.status.period_s is None and not output.status.late

    def test_reset_reseeds_the_noise(self, streams):
        controller = Controller.load(WAYPOINT)
        stream = streams[1_000_000][1][:9]
        first = [controller.step(o, 0.02 * t).action for t, o in enumerate(stream)]
        controller.reset(seed=0)  # the config's seed: the same noise again
        again = [controller.step(o, 0.02 * t).action for t, o in enumerate(stream)]
        controller.reset(seed=1)
        other = [controller.step(o, 0.02 * t).action for t, o in enumerate(stream)]
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)


class TestConfig:
    def test_invalid_settings_name_the_valid_ones(self):
        with pytest.raises(ValueError, match=r"`blend` must be one of \['none', 'ensemble', 'crossfade'\]"):
            ControllerConfig(blend="average")
        with pytest.raises(ValueError, match="`crossfade_steps` must be in"):
            Controller(FakePolicy(), ControllerConfig(blend="crossfade", crossfade_steps=5, ctrl_dt=0.02))
        with pytest.raises(ValueError, match="`lead`"):
            Controller(FakePolicy(), ControllerConfig(prefetch=True, lead=5, ctrl_dt=0.02))
        with pytest.raises(ValueError, match="`replan_every` must be in"):
            Controller(FakePolicy(), ControllerConfig(blend="ensemble", replan_every=9, ctrl_dt=0.02))
        with pytest.raises(ValueError, match="`late_factor` must be > 1"):
            ControllerConfig(late_factor=1.0)


class TestEval:
    def test_eval_of_an_exported_policy_reproduces_its_card(self):
        report = evaluate(EvalConfig(policy=str(PUSH), episodes=3, progress=False))
        card = json.loads((PUSH / "eval.json").read_text())
        keys = ("seed", "success", "return", "length")
        assert [{k: e[k] for k in keys} for e in report["per_episode"]] == [
            {k: e[k] for k in keys} for e in card["per_episode"][:3]
        ]

    def test_eval_with_blending(self):
        report = evaluate(EvalConfig(policy=str(PUSH), episodes=2, progress=False, blend="crossfade"))
        assert report["episodes"] == 2
        with pytest.raises(ValueError, match="`blend` applies to exported policies"):
            EvalConfig(policy="expert", blend="ensemble")

    def test_eval_prefetch_lead_gives_the_background_thread_s_episodes(self):
        # What the ROS node runs with prefetch (a thread that finishes in time), replayed in step by eval.
        report = evaluate(EvalConfig(policy=str(PUSH), episodes=2, progress=False, prefetch_lead=1))
        assert report["policy_run"]["options"]["prefetch_lead"] == 1
        policy = OnnxPolicy(PUSH)
        env = make(policy.metadata.env_id)
        with Controller(policy, ControllerConfig(prefetch=True, lead=1)) as controller:
            for episode in report["per_episode"]:
                observation, _ = env.reset(seed=episode["seed"])
                controller.reset(episode["seed"])
                total, done, t = 0.0, False, 0
                while not done:
                    output = controller.step(observation, t * controller.ctrl_dt)
                    controller.sync()
                    observation, reward, terminated, truncated, _ = env.step(output.action)
                    total, done, t = total + reward, terminated or truncated, t + 1
                assert total == pytest.approx(episode["return"])
        env.close()
        with pytest.raises(ValueError, match="`prefetch_lead` applies to exported policies"):
            EvalConfig(policy="expert", prefetch_lead=1)
        with pytest.raises(ValueError, match=r"`prefetch_lead` must be >= 0"):
            EvalConfig(policy=str(PUSH), prefetch_lead=-1)


def test_the_controller_does_not_import_torch():
    code = (
        "import sys; from robot_rl.runtime import Controller; from robot_rl.envs.registry import make; "
        f"c = Controller.load({str(PUSH)!r}); env = make(c.policy.metadata.env_id); o, _ = env.reset(seed=0); "
        "c.step(o, 0.0); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class TestBadObservations:
    def test_nan_or_inf_gives_the_fallback_with_the_reason_and_never_reaches_the_policy(self):
        policy = FakePolicy()
        controller = Controller(policy, ControllerConfig(ctrl_dt=0.02))
        controller.step(obs(1), 0.0)
        for bad in (np.nan, np.inf, -np.inf):
            output = controller.step({"observation": np.array([0.5, bad])}, 0.02)
            assert np.all(np.isfinite(output.action))
            np.testing.assert_array_equal(output.action, np.zeros(2))
            assert "observation" in output.status.fallback
        # The history kept only finite observations: the next chunk is computed from them.
        for t in range(2, 5):
            controller.step(obs(t), 0.02 * t)
        assert all(np.all(np.isfinite(h)) for h in policy.histories)

    def test_a_given_fallback_is_used(self):
        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02), fallback=lambda o: np.array([7.0, 8.0]))
        output = controller.step({"observation": np.array([np.nan, 0.0])}, 0.0)
        np.testing.assert_array_equal(output.action, [7.0, 8.0])
        assert output.status.fallback is not None and not output.status.new_chunk

    def test_the_franka_fallback_holds_the_arm_and_keeps_the_gripper(self):
        policy = OnnxPolicy(PUSH)
        env = make(policy.metadata.env_id)
        controller = Controller(policy)
        observation, _ = env.reset(seed=1_000_000)
        controller.reset(1_000_000)
        first = controller.step(observation, 0.0).action
        broken = {**observation, "observation": np.full_like(observation["observation"], np.nan)}
        held = controller.step(broken, 0.04).action
        np.testing.assert_array_equal(held[:3], 0.0)
        assert held[3] == first[3]
        env.close()

    def test_a_huge_finite_observation_never_gives_a_non_finite_command(self):
        """3e38 passes the NaN check but overflows the network: the fallback goes out, through the filters."""
        seen = []

        def clip(command, observation, status):
            seen.append(command.copy())
            return np.clip(command, -0.5, 0.5), {"name": "clip"}

        for policy_dir in (PUSH, POLICIES / "quadrotor_hover_diffusion"):
            policy = OnnxPolicy(policy_dir)
            env = make(policy.metadata.env_id)
            observation, _ = env.reset(seed=1_000_000)
            for filters in ((), (clip,)):
                controller = Controller(policy, filters=list(filters))
                controller.reset(1_000_000)
                controller.step(observation, 0.0)
                signs = np.where(np.arange(observation["observation"].size) % 2 == 0, 1.0, -1.0)
                reasons = set()
                for t in range(1, 13):  # past the chunk in play, so the network sees the huge history
                    huge = {k: np.full_like(v, 3e38) for k, v in observation.items()}
                    huge["observation"] = huge["observation"] * signs
                    output = controller.step(huge, 0.04 * t)
                    assert np.all(np.isfinite(output.action)), (policy_dir.name, t)
                    reasons.add(output.status.fallback)
                assert "non-finite policy output" in reasons
                assert all(np.all(np.isfinite(c)) for c in seen)
            env.close()

    def test_a_policy_giving_nan_takes_the_fallback_with_the_reason(self):
        class NanPolicy(FakePolicy):
            def predict(self, obs_history, rng=None):
                return np.full((self.horizon, self.action_dim), np.nan)

        controller = Controller(NanPolicy(), ControllerConfig(ctrl_dt=0.02), fallback=lambda o: np.array([0.1, 0.2]))
        output = controller.step(obs(1), 0.0)
        np.testing.assert_array_equal(output.action, [0.1, 0.2])
        assert output.status.fallback == "non-finite policy output"

    def test_a_missing_entry_or_wrong_shape_names_the_key_and_the_expected_shape(self):
        controller = Controller(FakePolicy(), ControllerConfig(ctrl_dt=0.02))
        with pytest.raises(KeyError, match="missing 'observation'"):
            controller.step({"obs": np.zeros(2)}, 0.0)
        with pytest.raises(ValueError, match=r"'observation' must have shape \(2,\). Got \(3,\)"):
            controller.step({"observation": np.zeros(3)}, 0.0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_action_steps", 0, r"n_action_steps must be an integer in \[1, 8\]. Got 0"),
        ("n_action_steps", -3, r"n_action_steps must be an integer in \[1, 8\]. Got -3"),
        ("n_action_steps", "four", r"n_action_steps must be an integer in \[1, 8\]. Got 'four'"),
        ("n_action_steps", 9, r"n_action_steps must be an integer in \[1, 8\]. Got 9"),
        ("ctrl_dt", 0, r"ctrl_dt must be a finite number > 0. Got 0"),
        ("ctrl_dt", -0.04, r"ctrl_dt must be a finite number > 0"),
        ("ctrl_dt", 0.004, r"ctrl_dt 0.004 s and control_rate_hz 25.0 disagree"),
        ("horizon", 2.5, r"horizon must be an integer >= 1. Got 2.5"),
    ],
)
def test_a_card_with_runtime_fields_a_controller_cannot_run_is_refused(tmp_path, field, value, message):
    from robot_rl.export.metadata import PolicyFormatError

    folder = tmp_path / "policy"
    shutil.copytree(PUSH, folder, ignore=shutil.ignore_patterns("monitor", "*.mp4"))
    card = json.loads((folder / "metadata.json").read_text())
    card[field] = value
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(PolicyFormatError, match=message):
        OnnxPolicy(folder)


def test_runtime_fields_edited_consistently_still_disagree_with_the_graph(tmp_path):
    from robot_rl.runtime.onnx_policy import PolicyIntegrityError

    folder = tmp_path / "policy"
    shutil.copytree(PUSH, folder, ignore=shutil.ignore_patterns("monitor", "*.mp4"))
    card = json.loads((folder / "metadata.json").read_text())
    card.update(ctrl_dt=0.004, control_rate_hz=250.0, n_action_steps=1)
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(PolicyIntegrityError, match=r"edited by hand"):
        OnnxPolicy(folder)
