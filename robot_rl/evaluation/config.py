"""What ``robot-rl eval`` evaluates and how: its options (a tyro dataclass), checked on construction.

The options that depend on what ``--policy`` holds are checked here by its kind
(:func:`robot_rl.deploy.policy_kind`); the folder or run itself is opened and validated when the evaluation
runs (:func:`robot_rl.deploy.open_policy`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from robot_rl.deploy import OpenedPolicy, open_policy, policy_kind
from robot_rl.envs.registry import check_env_id
from robot_rl.limits import check_counts, check_seed
from robot_rl.parallel import check_ray_address, check_workers, is_parallel

TRAINED_EVAL_SEED = 1_000_000
"""Default first seed when evaluating a trained policy: above every seed ``robot-rl collect`` hands out."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how."""

    env: str | None = None
    """Environment id (``robot-rl envs`` lists them); default: the trained policy's env, else PandaPush."""
    policy: str = "expert"
    """``expert`` (the scripted expert), ``random`` (uniform random actions), a training run directory or an
    exported policy folder (``robot-rl export``; run by onnxruntime)."""
    episodes: int = 100
    """Number of episodes; episode k uses seed ``seed + k``."""
    seed: int | None = None
    """First episode's seed; default 0, and 1000000 for a trained policy (never a demo's seed)."""
    inference_steps: int | None = None
    """Diffusion runs: denoising steps (default: the run's; an exported policy has them fixed at export)."""
    n_action_steps: int | None = None
    """Chunked policies: actions executed per chunk (default: the run's)."""
    blend: Literal["none", "ensemble", "crossfade"] = "none"
    """Exported policies: transitions between action chunks in the runtime controller (``none``: receding
    horizon; ``ensemble``: ACT-style temporal ensembling; ``crossfade``: linear cross-fade; see README, Runtime)."""
    prefetch_lead: int = 0
    """Exported policies: 0 computes each chunk when it is due (also what the ROS policy node's ``prefetch`` with
    ``prefetch_lead`` 0 gives when the state it primes from is the step's); N > 0 computes it N steps earlier, from
    the observation then, as the node does with ``prefetch_lead`` N (there in a background thread; here in step,
    giving the chunks the thread gives when it finishes in time). Measures what prefetch costs in success."""
    threads: int = 1
    """torch CPU threads for a trained policy (one avoids fighting other jobs for the cores)."""
    plot: Path | None = None
    """Trained policies: write the training curves (success and return over training) as a PNG here."""
    randomize: str = "nominal"
    """Domain randomization: ``nominal`` (off), ``train``, or a YAML file (keys in the README)."""
    video: Path | None = None
    """Write an MP4 of the first episodes here (offscreen rendering; MUJOCO_GL=osmesa on CPU)."""
    video_episodes: int = 3
    """How many episodes the video shows."""
    json: Path | None = None
    """Write the eval report (JSON) here."""
    log: Path | None = None
    """Write every rollout into this MCAP file for Foxglove (docs/observability.md): the 3-D scene, the policy's
    action and the command sent, each safety filter's report, watchdog and e-stop events, the monitor's scores
    with their thresholds and alarms, each episode's success. A file that cannot be written: a warning, no log."""
    progress: bool = True
    """Show a progress bar."""
    workers: int | None = None
    """Processes that run the episodes, each with its own env and policy stack on one thread (episode k still
    runs seed ``seed + k``; the report is the one-process report, plus ``execution``: where each episode ran).
    Default 1: this process; with --ray-address, the cluster's CPUs."""
    ray_address: str | None = None
    """Run the episodes on a Ray cluster (the ``ray`` extra; docs/scale.md): ``auto`` (the cluster `ray start`
    started on this machine) or HOST:PORT of its head."""
    takeover: Literal["none", "keyboard", "gamepad", "spacemouse"] = "none"
    """A device that can take over from the policy (rules: robot_rl/teleop/intervention.py); runs in real time."""
    takeover_hold: float = 0.5
    """How long a motion takeover lasts after the device stops moving [s]."""
    record: Path | None = None
    """Record every episode, with the per-step human ``interventions`` flag, into this demo HDF5 (appends)."""
    realtime: bool = True
    """With --takeover: pace the rollout at the env's control period."""
    view: bool = True
    """With --takeover: show a MuJoCo viewer when a display exists (else a status line)."""
    safety: Literal["on", "off"] = "off"
    """``on``: every command passes the robot's safety chain (hardware/fr3.yaml or hardware/crazyflie.yaml: limits,
    CBF workspace/geofence, rate limits, watchdog), as on hardware; the report counts the steps it changed
    (``safety_interventions``). The constraint check (``safety_violations``) runs either way."""
    monitor: Literal["on", "off"] = "off"
    """``on``: an exported policy's failure monitor (``robot-rl monitor calibrate``) watches every chunk; the report
    counts episodes with an alarm (``monitor_alarms``) and each episode's first alarm step. Without calibration
    files the eval runs with the monitor off and says so."""
    suite: str | None = None
    """Run a robustness suite instead of one condition: ``robustness`` (the families of the policy's robot, in
    robot_rl/evaluation/suites/) or a suite YAML. Every family on the same ``--episodes`` seeds (from the suite's
    seed unless --seed is given), the scripted expert beside the policy; prints the table, writes --json and --plot."""
    families: tuple[str, ...] = ()
    """With --suite: only these families (and nominal); default all."""
    suite_expert: bool = True
    """With --suite: also run the scripted expert under every family, on the same seeds."""
    card: bool = False
    """With --suite on an exported policy: put the table on its card (metadata.json ``robustness``, README.md,
    robustness.json)."""
    monitor_detector: str = "fiper"
    """Which calibrated detector raises the alarm: ``fiper`` (RND and entropy, jointly calibrated), ``fiper_marginal``,
    ``rnd``, ``entropy``, ``progress`` (goal progress, goal tasks), ``fiper_progress`` (FIPER or goal progress) or
    ``fiper_progress_split`` (the same, alpha split between the two: on PandaPush the one that meets the targets)."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "episodes", "video_episodes", "threads", "inference_steps", "n_action_steps")
        check_workers(self.workers)
        check_ray_address(self.ray_address)
        if is_parallel(self.workers, self.ray_address):
            self._check_parallel()
        if self.prefetch_lead < 0:
            raise ValueError(f"`prefetch_lead` must be >= 0 (0: off). Got {self.prefetch_lead}.")
        check_counts(self, 0, "prefetch_lead")
        check_seed("seed", self.seed)
        if not 0.0 <= self.takeover_hold <= 60.0:
            raise ValueError(f"`takeover_hold` must be in [0, 60] s. Got {self.takeover_hold}.")
        keyword = self.policy in ("expert", "random")
        if not keyword and not Path(self.policy).is_dir():
            raise ValueError(
                f"`policy` must be 'expert', 'random', a training run directory (`robot-rl train ... --out DIR`) or "
                "an exported policy folder (`robot-rl export ... --out DIR`). "
                f"Got {self.policy!r}, which is neither a keyword nor an existing directory."
            )
        exported = not keyword and policy_kind(self.policy) == "exported"
        for name, applies, fix in (
            ("blend", self.blend != "none", "Use --blend none."),
            ("prefetch_lead", self.prefetch_lead > 0, "Use --prefetch-lead 0."),
        ):
            if applies and not exported:
                raise ValueError(
                    f"`{name}` applies to exported policies (`robot-rl export ... --out DIR`); {self.policy!r} is not "
                    f"one. {fix}"
                )
        if self.blend == "ensemble" and self.n_action_steps is not None:
            raise ValueError(
                "`n_action_steps` does not apply with --blend ensemble (it takes up a new chunk every "
                "`ControllerConfig.replan_every` steps and blends them all)."
            )
        if self.suite is None and (self.families or self.card):
            raise ValueError("`families` and `card` apply to a robustness suite; add --suite robustness.")
        if self.suite is not None and (
            self.takeover != "none" or self.record is not None or self.video is not None or self.log is not None
        ):
            raise ValueError("--suite runs many conditions unattended: drop --takeover, --record, --video and --log.")
        if self.card and not exported:
            raise ValueError(
                f"`card` writes an exported policy's card (`robot-rl export ... --out DIR`); {self.policy!r} is not "
                "one."
            )
        if self.plot is not None and keyword and self.suite is None:
            raise ValueError("`plot` draws a training run's curves; --policy must be a run directory.")
        for name in ("safety", "monitor"):
            if getattr(self, name) not in ("on", "off"):
                raise ValueError(f"`{name}` must be 'on' or 'off'. Got {getattr(self, name)!r}.")
        from robot_rl.monitor.conformal import DETECTORS

        if self.monitor_detector not in DETECTORS:
            raise ValueError(f"`monitor_detector` must be one of {list(DETECTORS)}. Got {self.monitor_detector!r}.")
        if self.monitor == "on" and not exported:
            raise ValueError(
                f"`monitor` watches an exported policy (`robot-rl export ... --out DIR`, then `robot-rl monitor "
                f"calibrate`); {self.policy!r} is not one. Use --monitor off."
            )

    def _check_parallel(self) -> None:
        """Refuse what cannot leave this process or would not give the one-process report on workers."""
        why = None
        if self.takeover != "none" or self.record is not None:
            why = "--takeover and --record need the operator's process"
        elif self.log is not None:
            why = "--log writes one timeline from one process"
        elif self.policy == "random":
            why = (
                "--policy random draws every episode's actions from one stream seeded once, so episode k depends on "
                "the episodes before it"
            )
        elif self.monitor == "on":
            why = (
                "--monitor on: the failure monitor's samples come from one stream across episodes, so episode k's "
                "alarms depend on the episodes before it"
            )
        if why is not None:
            raise ValueError(f"episodes split over workers (--workers, --ray-address) must not depend on each other: "
                             f"{why}. Use --workers 1 (the default) without --ray-address.")  # fmt: skip


@dataclasses.dataclass
class Resolved:
    """What an evaluation runs: its env, its first seed and the policy opened."""

    env_id: str
    seed: int
    opened: OpenedPolicy | None
    """``config.policy`` opened; None for ``expert`` and ``random``."""


def policy_env_id(config: EvalConfig) -> str:
    """The env an evaluation runs: ``--env``, else the trained policy's env, else PandaPush (checked)."""
    return resolve(config, check_seeds=False).env_id


def resolve(config: EvalConfig, check_seeds: bool = True) -> Resolved:
    """The opened policy, the env and the first seed an evaluation uses (checks demo-seed overlap)."""
    opened = None if config.policy in ("expert", "random") else open_policy(config.policy)
    if opened is not None and opened.kind == "exported" and config.plot is not None:
        assert opened.card is not None
        raise ValueError(
            f"`plot` draws a training run's curves; {config.policy} is an exported policy (its run: "
            f"{opened.card.base.run_dir})."
        )
    trained_env = opened.env_id if opened is not None else None
    env_id = check_env_id(config.env or trained_env or "robot_rl/PandaPush-v0")
    if trained_env is not None and env_id != trained_env:
        raise ValueError(f"{config.policy} was trained on {trained_env}; --env is {env_id}. Evaluate it on its env.")
    seed = config.seed if config.seed is not None else (TRAINED_EVAL_SEED if trained_env else 0)
    if opened is not None and check_seeds:
        demo_seeds = set(opened.demo_seeds)
        overlap = sorted(demo_seeds & set(range(seed, seed + config.episodes)))
        if overlap:
            raise ValueError(
                f"evaluation seeds {seed}..{seed + config.episodes - 1} overlap the seeds of the demos "
                f"{config.policy} was trained on (e.g. {overlap[:3]}); choose --seed outside "
                f"{min(demo_seeds)}..{max(demo_seeds)} (the default, {TRAINED_EVAL_SEED}, is)."
            )
    return Resolved(env_id, seed, opened)
