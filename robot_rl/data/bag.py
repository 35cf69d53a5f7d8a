"""rosbag2 recordings of the ROS 2 nodes -> demonstration files (``robot-rl data from-bag``), without ROS.

The policy and teleop nodes of ``ros2_ws/src/robot_rl_ros`` publish one step record per control
step on :data:`STEP_TOPIC` (std_msgs/Float64MultiArray): the segments named by
:data:`STEP_FIELDS`, in that order, each ``layout.dim[i]`` giving its ``label`` and ``size``:

==============  ======  ==========================================================
segment         size    meaning
==============  ======  ==========================================================
episode         1       the publishing node's episode counter
seed            1       the episode's seed (-1: none)
step            1       steps since the episode started
observation     O       the env observation the command was computed from
achieved_goal   3       achieved goal [m]
desired_goal    3       desired goal [m]
action          A       the action sent, after the safety filters
intervention    1       1 when a human (teleop node) commanded the step, else 0
==============  ======  ==========================================================

Episode boundaries come from :data:`EPISODE_TOPIC` (std_msgs/String, JSON ``{"source", "event":
"start" | "end", "env_id", "seed", "success"}``) when the bag has it: the sim bridge's events (on
reset and when the episode ends) when present, else the policy node's (activation, deactivation);
after an ``end`` only the next record is kept (the last step's ``next_obs``). Without events, the
``episode`` segment groups the records.

Each episode becomes ``data/demo_K``: step t holds record t's observation and action, ``next_obs``
record t+1's observation (so an episode of N records gives N - 1 steps); rewards are the env's
``compute_reward`` on the next observation's goals; ``dones`` marks the last step; ``states`` has
width 0, because a robot has no simulator state (``robot-rl data replay`` and ``render`` need one;
training does not). The success label is the sim bridge's ``end`` event when recorded, else the
env's rule on the recorded goals (within ``distance_threshold`` at the end, held for ``hold_time``
where the env has one).

Reads rosbag2 folders in either storage (MCAP or sqlite3, metadata version 8 or 9) with
``rosbags`` (the ``ros`` extra).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.schema import DatasetError

STEP_TOPIC = "/robot_rl/steps"
"""Topic of the step records."""
EPISODE_TOPIC = "/robot_rl/episode"
"""Topic of the episode events (JSON strings)."""
STEP_FIELDS: tuple[str, ...] = (
    "episode",
    "seed",
    "step",
    "observation",
    "achieved_goal",
    "desired_goal",
    "action",
    "intervention",
)
"""The segments of a step record, in order."""
BAG_SOURCE = "ros_bag"
"""``source`` of demonstrations converted from a bag."""


@dataclasses.dataclass
class _Episode:
    key: Any
    records: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    seed: int | None = None
    success: bool | None = None


def parse_step_record(labels: list[str], sizes: list[int], data: np.ndarray) -> dict[str, np.ndarray]:
    """The segments of one step record.

    Raises:
        DatasetError: the labels are not :data:`STEP_FIELDS` or the sizes do not add up.
    """
    if tuple(labels) != STEP_FIELDS:
        raise DatasetError(f"a step record must have the segments {list(STEP_FIELDS)} in order. Got {labels}.")
    if sum(sizes) != len(data):
        raise DatasetError(
            f"a step record's segment sizes {sizes} add up to {sum(sizes)}, but it has {len(data)} values."
        )
    out, start = {}, 0
    for label, size in zip(labels, sizes, strict=True):
        out[label] = np.asarray(data[start : start + size], dtype=np.float64)
        start += size
    return out


def read_bag(
    bag: str | os.PathLike[str], steps_topic: str = STEP_TOPIC, episode_topic: str = EPISODE_TOPIC
) -> tuple[list[tuple[int, dict[str, np.ndarray]]], list[tuple[int, dict[str, Any]]]]:
    """Step records and episode events of a rosbag2 folder, with their log times [ns], in log-time order.

    Raises:
        DatasetError: not a rosbag2 folder, or it has no ``steps_topic``.
    """
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise DatasetError("reading bags needs rosbags: `pip install -e '.[ros]'`.") from None
    path = Path(bag)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag (a rosbag2 folder with metadata.yaml).")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as err:  # rosbags raises its own error types for unreadable folders
        raise DatasetError(f"{path} cannot be read as a rosbag2 recording ({err}).") from None
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        if steps_topic not in topics:
            raise DatasetError(
                f"{path} has no {steps_topic} topic (the policy and teleop nodes' step records); its topics: "
                f"{sorted(topics)}. Record {steps_topic} (ros2_ws/README.md, Recording)."
            )
        wanted = [c for c in reader.connections if c.topic in (steps_topic, episode_topic)]
        records: list[tuple[int, dict[str, np.ndarray]]] = []
        events: list[tuple[int, dict[str, Any]]] = []
        for connection, timestamp, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == steps_topic:
                dims = msg.layout.dim
                records.append(
                    (timestamp, parse_step_record([d.label for d in dims], [int(d.size) for d in dims], msg.data))
                )
            else:
                try:
                    events.append((timestamp, json.loads(msg.data)))
                except (json.JSONDecodeError, TypeError):
                    continue  # not one of ours
    finally:
        reader.close()
    return records, events


def _group(
    records: list[tuple[int, dict[str, np.ndarray]]], events: list[tuple[int, dict[str, Any]]]
) -> tuple[list[_Episode], int]:
    """Episodes with at least 2 records, and how many had a single one (empty ones are not counted)."""
    # One source of episode boundaries: the sim bridge's (it knows seeds and success), else the policy node's,
    # else the teleop node's.
    source = next((s for s in ("sim", "policy", "teleop") if any(e.get("source") == s for _, e in events)), None)
    chosen = [(t, e) for t, e in events if e.get("source") == source]
    starts = [(t, e) for t, e in chosen if e.get("event") == "start"]
    episodes: list[_Episode] = []
    if starts:
        ends = [(t, e) for t, e in chosen if e.get("event") == "end"]
        next_starts = [t for t, _ in starts[1:]] + [math.inf]
        for i, (t0, event) in enumerate(starts):
            end_event = next(((t, e) for t, e in ends if t0 <= t < next_starts[i]), None)
            t1 = end_event[0] if end_event is not None else next_starts[i]
            episode = _Episode(key=i, seed=event.get("seed"))
            episode.records = [r for t, r in records if t0 <= t <= t1]
            if end_event is not None:
                # The first record after the end holds the observation the last action led to (its action is
                # never applied): the last step's next_obs.
                after = next((r for t, r in records if t1 < t < next_starts[i]), None)
                if after is not None:
                    episode.records.append(after)
            if end_event is not None and end_event[1].get("success") is not None:
                episode.success = bool(end_event[1]["success"])
            episodes.append(episode)
    else:
        by_key: dict[float, _Episode] = {}
        for _, record in records:
            key = float(record["episode"][0])
            by_key.setdefault(key, _Episode(key=key)).records.append(record)
        episodes = list(by_key.values())
    for episode in episodes:
        if episode.seed is None and episode.records:
            seed = float(episode.records[0]["seed"][0])
            episode.seed = int(seed) if seed >= 0 else None
        elif episode.seed is not None and int(episode.seed) < 0:
            episode.seed = None
    kept = [e for e in episodes if len(e.records) >= 2]
    return kept, sum(len(e.records) == 1 for e in episodes)


def _env_id(events: list[tuple[int, dict[str, Any]]], env_id: str | None) -> str:
    named = {e["env_id"] for _, e in events if e.get("env_id")}
    if env_id is not None:
        return env_id
    if len(named) == 1:
        return named.pop()
    if not named:
        raise DatasetError("the bag's episode events name no env; pass --env ID (`robot-rl envs` lists them).")
    raise DatasetError(f"the bag's episodes come from several envs {sorted(named)}; pass --env ID to choose one.")


def _success(env: Any, achieved: np.ndarray, desired: np.ndarray) -> bool:
    """The env's success rule on the recorded goals (end within the threshold, held for ``hold_time``)."""
    unwrapped = env.unwrapped
    within = np.linalg.norm(achieved - desired, axis=-1) <= unwrapped.distance_threshold
    hold = getattr(unwrapped, "hold_time", None)
    if hold is None:
        return bool(within[-1])
    need = max(1, math.ceil(hold / unwrapped.ctrl_dt - 1e-9))
    return len(within) >= need and bool(np.all(within[-need:]))


def bag_to_demos(
    bag: str | os.PathLike[str],
    out: str | os.PathLike[str],
    env_id: str | None = None,
    steps_topic: str = STEP_TOPIC,
    episode_topic: str = EPISODE_TOPIC,
) -> dict[str, Any]:
    """Convert the step records of a bag into demonstrations appended to ``out`` (created if missing).

    Args:
        bag: rosbag2 folder.
        out: Demonstration HDF5 file (robomimic layout; appended to when it holds the same env).
        env_id: The env the records come from (default: the ``env_id`` of the episode events).
        steps_topic: Topic of the step records.
        episode_topic: Topic of the episode events.

    Returns:
        A summary: ``out``, ``env_id``, ``demos`` (names written), ``steps``, ``skipped`` (episodes
        with a single record: no step), ``interventions`` (steps a human commanded).

    Raises:
        DatasetError: no step records, records that do not fit the env, or an env that cannot be told.
        FileNotFoundError: no bag at ``bag``.
    """
    from robot_rl.data.recorder import DemoRecorder
    from robot_rl.envs.registry import check_env_id, make

    records, events = read_bag(bag, steps_topic, episode_topic)
    if not records:
        raise DatasetError(f"{bag}: {steps_topic} holds no messages; nothing to convert.")
    env_id = check_env_id(_env_id(events, env_id))
    episodes, skipped = _group(records, events)
    env = make(env_id)
    try:
        unwrapped = env.unwrapped
        obs_dim = env.observation_space["observation"].shape[0]
        action_dim = env.action_space.shape[0]
        for episode in episodes:
            for record in episode.records:
                if record["observation"].shape != (obs_dim,) or record["action"].shape != (action_dim,):
                    raise DatasetError(
                        f"{bag}: a step record has observation {record['observation'].shape} and action "
                        f"{record['action'].shape}; {env_id} has ({obs_dim},) and ({action_dim},). Pass the --env "
                        "the policy ran on."
                    )
        written: list[str] = []
        steps = interventions = 0
        low, high = env.action_space.low, env.action_space.high
        with DemoRecorder(
            out, env_id, {}, float(unwrapped.ctrl_dt), source=BAG_SOURCE, action_bounds=(low, high)
        ) as recorder:
            empty_state = np.empty(0)
            for episode in episodes:
                obs = [{k: r[k] for k in ("observation", "achieved_goal", "desired_goal")} for r in episode.records]
                achieved = np.array([o["achieved_goal"] for o in obs])
                desired = np.array([o["desired_goal"] for o in obs])
                rewards = np.asarray(unwrapped.compute_reward(achieved[1:], desired[1:], None), dtype=np.float64)
                recorder.start_episode(episode.seed)
                count = len(obs) - 1
                for t in range(count):
                    flag = bool(episode.records[t]["intervention"][0] > 0.5)
                    interventions += flag
                    recorder.add_step(
                        obs[t], episode.records[t]["action"], float(rewards[t]), t == count - 1, obs[t + 1],
                        empty_state, intervention=flag,
                    )  # fmt: skip
                env_success = _success(env, achieved[1:], desired[1:])
                success = env_success if episode.success is None else episode.success
                written.append(recorder.commit(success=success, env_success=env_success))
                steps += count
    finally:
        env.close()
    return {
        "out": str(out),
        "env_id": env_id,
        "demos": written,
        "steps": steps,
        "skipped": skipped,
        "interventions": interventions,
    }
