"""The card's description of policy.onnx for runtimes without robot_rl: every tensor and the call rule.

:func:`describe` fills, from the card's own fields, what a C++ or Node program needs to run the graph
from metadata.json alone, written as robot_rl's runtime ``Controller`` runs it (blend ``none``, no
prefetch; :mod:`robot_rl.runtime.controller`, :mod:`robot_rl.runtime.onnx_policy`,
:mod:`robot_rl.rl.residual_export`):

- per input and output (:class:`~robot_rl.export.metadata.TensorSpec`): what each axis counts, the
  meaning, the units, the call rule (which call feeds it, the empty batch of the path not used) and,
  for the diffusion ``noise``, its distribution;
- ``observation.values``: what each index of a flattened observation is, with its unit (from the env's
  own observation table, :func:`observation_doc`);
- ``calling`` (:class:`~robot_rl.export.metadata.CallRule`): the steps of one control period, chunking,
  the history, normalization, clipping, the noise, the empty-batch convention, invalid observations
  and the onnxruntime settings that reproduce robot_rl's actions bit for bit.

The exporter calls it on every card it writes; cards of policies exported before gain the same fields
from the same function (the graph's weights untouched).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from robot_rl.export.metadata import (
    ACTIONS_OUTPUT,
    BASE_ACTION_INPUT,
    NOISE_INPUT,
    OBS_INPUT,
    PREVIOUS_ACTION_INPUT,
    RESIDUAL_ACTION_OUTPUT,
    RESIDUAL_OBS_INPUT,
    CallRule,
    PolicyMetadata,
    TensorSpec,
)

NOISE_DISTRIBUTION = (
    "standard normal N(0, I): every element independent, mean 0, variance 1 (float32; robot_rl draws float64 "
    "and rounds to float32)"
)
"""The distribution of the diffusion graph's ``noise`` input."""

REFERENCE_RUNTIME = (
    "onnxruntime, CPUExecutionProvider, intra_op_num_threads 1, inter_op_num_threads 1, sequential execution, "
    "graph_optimization_level ORT_ENABLE_ALL; inputs rounded to float32 from float64 values (round to nearest); "
    "outputs widened to float64. Other thread counts, providers or onnxruntime versions may differ in the last "
    "bits (float32 rounding), which a diffusion sampler carries through its steps."
)

FEATURE_DOC = {
    "quadrotor_disturbance": ("estimated unmodelled acceleration (world frame; disturbance observer)", "m/s^2")
}
"""Quantity and unit of each observation feature's values (robot_rl.policies.features)."""

DESCRIBED_TENSOR_FIELDS = ("axes", "meaning", "units", "call", "distribution")
"""The fields of a card's tensor (:class:`~robot_rl.export.metadata.TensorSpec`) that :func:`describe` fills."""

_ROW = re.compile(r"^\s*(\d+)(?:-(\d+))?\s{2,}(.+?)\s{2,}(\S+)\s*$")
_GOAL = re.compile(r"``(achieved_goal|desired_goal)``: ([^\[;.]+?) \[([^\]]+)\](?: \(([^)]+?) for (\w+)\))?")
_APPENDS = re.compile(r"appends (the [^(]+?) \(indices (\d+)-(\d+), ([^)]+)\)")
_SUBSET = re.compile(r"(\w+) has the (\d+) entries [^:]*: ([^)]+)\)")


def observation_doc(env: Any) -> dict[str, list[tuple[int, int, str, str]]]:
    """The env's observation table, from its documentation: entry -> [(start, stop, quantity, unit)].

    Reads the ``idx / quantity / unit`` table of the ``observation`` entry and the goals' sentences in the
    docstring of the env's class, fitted to this env's ``observation`` size: a task that appends entries
    (``appends ... (indices i-j, unit)``) or keeps a subset (``Task has the N entries ...: a, b, ...``) as its
    documentation says; an entry or an index the documentation does not describe for this env is left out.
    """
    unwrapped = getattr(env, "unwrapped", env)
    name = type(unwrapped).__name__
    doc = type(unwrapped).__doc__ or ""
    text = " ".join(doc.split())
    rows: list[tuple[int, int, str, str]] = []
    in_table = False
    for line in doc.splitlines():
        if re.match(r"^\s*idx\s+quantity\s+unit\s*$", line):
            in_table = True
            continue
        if in_table:
            match = _ROW.match(line)
            if match:
                first, last = int(match.group(1)), int(match.group(2) or match.group(1))
                rows.append((first, last + 1, match.group(3).strip(), match.group(4)))
            elif rows and line.strip().startswith("="):
                break
    try:
        size = math.prod(unwrapped.observation_space["observation"].shape)
    except (AttributeError, KeyError, TypeError):
        size = None
    rows = _fit(rows, size, name, text) if size is not None else []
    out: dict[str, list[tuple[int, int, str, str]]] = {"observation": rows} if rows else {}
    for entry, quantity, unit, other, task in _GOAL.findall(text):
        out.setdefault(entry, [(0, 3, other if other and task in name else quantity.strip(), unit)])
    return out


def _fit(rows: list[tuple[int, int, str, str]], size: int, name: str, text: str) -> list[tuple[int, int, str, str]]:
    """The table's rows for an ``observation`` of ``size`` values (empty when the documentation does not say)."""
    if not rows or [r[0] for r in rows[1:]] != [r[1] for r in rows[:-1]] or rows[0][0] != 0:
        return []
    end = rows[-1][1]
    if end == size:
        return rows
    if end < size:
        for quantity, first, last, unit in _APPENDS.findall(text):
            if int(first) == end and int(last) + 1 == size:
                return [*rows, (end, size, quantity, unit)]
        return rows  # the rest is undocumented
    for task, count, names in _SUBSET.findall(text):
        if task not in name or int(count) != size:
            continue
        subset, offset = [], 0
        for item in names.split(", "):
            words = item.split()  # "TCP velocity" is the row "TCP linear velocity (world)": same first word, subset
            match = next((r for r in rows if r[2].split()[0] == words[0] and set(words) <= set(r[2].split())), None)
            if match is None:
                return []
            subset.append((offset, offset + match[1] - match[0], match[2], match[3]))
            offset += match[1] - match[0]
        return subset if offset == size else []
    return []


def observation_values(meta: PolicyMetadata, doc: dict[str, list[tuple[int, int, str, str]]]) -> list[dict[str, Any]]:
    """``observation.values``: each index range of the flattened observation with its quantity and unit."""
    values: list[dict[str, Any]] = []

    def add(offset: int, start: int, stop: int, source: str, quantity: str, unit: str) -> None:
        values.append(
            {"start": offset, "stop": offset + stop - start, "source": source, "quantity": quantity, "unit": unit}
        )

    for seg in meta.observation.segments:
        if seg.source.startswith("feature "):
            name = seg.source.removeprefix("feature ")
            quantity, unit = FEATURE_DOC.get(name, (f"observation feature {name} (observation.features)", ""))
            add(seg.offset, seg.start, seg.stop, seg.source, quantity, unit)
            continue
        if seg.source == "desired_goal - achieved_goal":
            (_, _, _, unit), *_ = doc.get("desired_goal", [(0, 3, "", "")])
            add(seg.offset, 0, 3, seg.source, "goal relative to the achieved goal (desired_goal - achieved_goal)", unit)
            continue
        position = seg.start
        for first, stop, quantity, unit in doc.get(seg.source, []):
            lo, hi = max(first, seg.start), min(stop, seg.stop)
            if lo >= hi:
                continue
            if lo > position:  # a gap in the documentation
                add(
                    seg.offset + position - seg.start,
                    position,
                    lo,
                    f"{seg.source}[{position}:{lo}]",
                    "undocumented",
                    "",
                )
            add(seg.offset + lo - seg.start, lo, hi, f"{seg.source}[{lo}:{hi}]", quantity, unit)
            position = hi
        if position < seg.stop:
            add(
                seg.offset + position - seg.start,
                position,
                seg.stop,
                f"{seg.source}[{position}:{seg.stop}]",
                "undocumented",
                "",
            )
    return values


def describe(meta: PolicyMetadata, doc: dict[str, list[tuple[int, int, str, str]]] | None = None) -> PolicyMetadata:
    """The card with every graph tensor, the call rule and (given the env's ``doc``) ``observation.values`` filled.

    Args:
        meta: A card (its ``onnx`` inputs and outputs name the graph's tensors).
        doc: :func:`observation_doc` of the policy's env; None keeps ``observation.values`` as it is.
    """
    names = {spec.name for spec in [*meta.onnx.inputs, *meta.onnx.outputs]}
    text = _Texts(meta, names)
    inputs = [text.tensor(spec) for spec in meta.onnx.inputs]
    outputs = [text.tensor(spec) for spec in meta.onnx.outputs]
    observation = meta.observation
    if doc is not None:
        observation = dataclasses.replace(observation, values=observation_values(meta, doc))
    return dataclasses.replace(
        meta,
        observation=observation,
        onnx=dataclasses.replace(meta.onnx, inputs=inputs, outputs=outputs),
        calling=text.calling(),
    )


class _Texts:
    """The sentences of one card (shapes, counts and names filled in)."""

    def __init__(self, meta: PolicyMetadata, names: set[str]) -> None:
        self.meta = meta
        self.n, self.d = meta.n_obs_steps, meta.observation.dim
        self.h, self.k, self.a = meta.horizon, meta.n_action_steps, meta.action_dim
        self.noise = NOISE_INPUT in names
        self.residual = RESIDUAL_OBS_INPUT in names
        self.feedback = PREVIOUS_ACTION_INPUT in names
        self.dsrl = (meta.residual or {}).get("algo") == "dsrl"
        self.obs_units = "the units of each index of one observation are in observation.values (raw values, SI)"
        self.action_units = (
            "the env's normalized action units (action.dims: what each entry commands, with its physical units)"
        )

    def tensor(self, spec: TensorSpec) -> TensorSpec:
        n, d, h, k, a = self.n, self.d, self.h, self.k, self.a
        when = "the chunk call" if self.residual else "every call"
        if spec.name == OBS_INPUT:
            return dataclasses.replace(
                spec,
                axes=["batch", "n_obs_steps", "obs_dim"],
                meaning=f"the last {n} flattened observations of the episode, oldest first (row {n - 1} is the current "
                "one); one row is observation.segments concatenated (observation.flatten). The graph standardizes it",
                units=self.obs_units,
                call=f"{when}: shape (B, {n}, {d}), B >= 1 histories (robot_rl: 1)"
                + (f"; on a step call: shape (0, {n}, {d})" if self.residual else ""),
            )
        if spec.name == NOISE_INPUT:
            return dataclasses.replace(
                spec,
                axes=["batch", "horizon", "action_dim"],
                meaning=f"the initial sample of the DDIM sampler unrolled in the graph ({self.meta.inference_steps} "
                "steps): the chunk is a deterministic function of obs_history and noise",
                units="dimensionless (the network's normalized action space)",
                distribution=NOISE_DISTRIBUTION,
                call=f"{when}: a fresh draw each time, never reused, shape (B, {h}, {a}) with B as in "
                "obs_history"
                + (f"; on a step call: shape (0, {h}, {a})" if self.residual else "")
                + " (calling.noise: how robot_rl draws it)",
            )
        if spec.name == ACTIONS_OUTPUT:
            base = "the base's " if self.residual else ""
            after = (
                "; each executed action goes through the step call as base_action, and the step call's "
                f"residual_action is sent instead. On a step call: shape (0, {h}, {a}), ignore it"
                if self.residual
                else ""
            )
            return dataclasses.replace(
                spec,
                axes=["batch", "horizon", "action_dim"],
                meaning=f"{base}action chunk: row j is the action for control period s + j, where s is the period "
                "whose observation is the newest row of obs_history"
                + (" (the DSRL agent chose the sampler's noise inside the graph: deterministic)" if self.dsrl else ""),
                units=self.action_units + "; the graph undoes the action normalization",
                call=f"execute rows 0..{k - 1} (n_action_steps = {k}), one per control period, then make the next "
                f"chunk call; rows {k}..{h - 1} are not executed. Not clipped: clip to [action.low, action.high] "
                f"before sending{after}",
            )
        if spec.name == RESIDUAL_OBS_INPUT:
            return dataclasses.replace(
                spec,
                axes=["rows", "obs_dim"],
                meaning="the current flattened observation (the newest row of obs_history at this period, features "
                "included); the graph standardizes it for the residual agent",
                units=self.obs_units,
                call=f"the step call, every control period: shape (R, {d}), R = 1 for one robot; on a chunk call: "
                f"shape (0, {d})",
            )
        if spec.name == BASE_ACTION_INPUT:
            return dataclasses.replace(
                spec,
                axes=["rows", "action_dim"],
                meaning="the base's action for this period: row t - s of the chunk in play (the actions output of the "
                "latest chunk call, made at period s)",
                units=self.action_units,
                call=f"the step call, every control period: shape (R, {a}); on a chunk call: shape (0, {a})",
            )
        if spec.name == PREVIOUS_ACTION_INPUT:
            return dataclasses.replace(
                spec,
                axes=["rows", "action_dim"],
                meaning="the residual_action of the previous period of this episode (before any safety filter); at an "
                "episode's first period, this period's base_action",
                units=self.action_units,
                call=f"the step call, every control period: shape (R, {a}); on a chunk call: shape (0, {a})",
            )
        if spec.name == RESIDUAL_ACTION_OUTPUT:
            scale = (self.meta.residual or {}).get("scale")
            return dataclasses.replace(
                spec,
                axes=["rows", "action_dim"],
                meaning="the action to send this period: clip(base_action + scale * clip(agent(residual_obs, "
                "base_action" + (", previous_action" if self.feedback else "") + "), -1, 1), action.low, action.high) "
                f"with scale {scale} per action entry (residual.scale; one value: every entry)",
                units=self.action_units + "; already clipped to [action.low, action.high]",
                call=f"the output of the step call, shape (R, {a}); on a chunk call: shape (0, {a}), ignore it",
            )
        return spec

    def calling(self) -> CallRule:
        n, d, h, k, a = self.n, self.d, self.h, self.k, self.a
        feeds = f"obs_history (1, {n}, {d})" + (", noise: a fresh draw (calling.noise)" if self.noise else "")
        empty_rows = f"residual_obs (0, {d}), base_action (0, {a})" + (
            f", previous_action (0, {a})" if self.feedback else ""
        )
        empty_chunk = f"obs_history (0, {n}, {d})" + (f", noise (0, {h}, {a})" if self.noise else "")
        features = self.meta.observation.features
        sequence = [
            "t = 0 at an episode's start (a new seed for the noise generator, an empty history, features reset).",
            "Read the observation; if any value read is NaN or inf, follow calling.invalid_input instead of the rest.",
            "Flatten it: the entries of observation.segments in order (each entry flattened row-major, then sliced), "
            "in float64"
            + (
                "; append the observation features (observation.features), updated from this observation and the "
                "command sent in the previous period"
                if features
                else ""
            )
            + ".",
            f"Append it to the history, which keeps the last {n} (at t = 0 this first observation fills all {n} rows).",
            f"If t = 0 or {k} actions of the chunk in play have been executed (t = s + {k}): chunk call with {feeds}"
            + (f", and {empty_rows}" if self.residual else "")
            + f"; the output actions[0] ({h} x {a}) becomes the chunk in play and s = t.",
            "The base action of this period is chunk[t - s]." if self.residual else "The action is chunk[t - s].",
        ]
        if self.residual:
            sequence.append(
                f"Step call with residual_obs = this period's flattened observation (1, {d}), base_action = "
                f"chunk[t - s] (1, {a})"
                + (
                    ", previous_action = the previous period's residual_action (at t = 0: base_action)"
                    if self.feedback
                    else ""
                )
                + f", and {empty_chunk}; residual_action[0] is the action."
            )
        sequence.append(
            "Clip the action to [action.low, action.high], pass it through your safety filters and send it"
            + ("; it is the command the features read next period" if features else "")
            + "; t = t + 1."
        )
        noise = None
        if self.noise:
            noise = (
                f"{NOISE_DISTRIBUTION}, shape (B, {h}, {a}), one fresh draw per chunk call; any N(0, I) source gives "
                "valid chunks. robot_rl's own draw, for identical chunks: one numpy.random.default_rng(seed) per "
                f"episode, seed = the episode's seed (robot-rl eval: the env seed), and per chunk call "
                f"rng.standard_normal((1, {h}, {a})) rounded to float32 (numpy's PCG64 and its ziggurat normals)."
            )
        empty = None
        if self.residual:
            empty = (
                "The graph holds two paths and every input must be fed on every call: the path not used gets a batch "
                f"of 0. Chunk call: {empty_rows}; its residual_action output has 0 rows. Step call: {empty_chunk}; its "
                "actions output has 0 rows. The axes batch and rows are independent (a call may also feed both)."
            )
        return CallRule(
            sequence=sequence,
            chunking=f"One chunk call predicts horizon = {h} actions; the first n_action_steps = {k} are executed, one "
            f"per control period of ctrl_dt = {self.meta.ctrl_dt:g} s, then the next chunk is computed from the "
            "history ending with the observation of that period (receding horizon; robot_rl's blend none).",
            history=f"obs_history holds the last {n} flattened observations, oldest first; at an episode's first "
            f"period the first observation fills all {n} rows; a period whose observation is not used "
            "(calling.invalid_input) adds nothing.",
            normalization="Inside the graph: feed raw observations, read raw actions. normalization.obs_mean and "
            "obs_std (x - mean) / std and the [-1, 1] <-> [action_low, action_high] mapping are the graph's own "
            "constants, given for reference: do not apply them again.",
            action_limits="actions (the chunk) are not clipped by the graph: clip each executed action to "
            "[action.low, action.high] before sending (the env clips too)"
            + (
                "; residual_action is already clipped to [action.low, action.high] by the graph"
                if self.residual
                else ""
            )
            + ". Safety limits of the robot (hardware/*.yaml) come on top.",
            noise=noise,
            empty_batch=empty,
            invalid_input="An observation holding NaN or inf never reaches the graph: send the fallback (your safety "
            "layer's hold; robot_rl without one: zeros, a Franka gripper keeping its last command); the history keeps "
            "the last good observation; t still advances (the chunk's action for that period is dropped)"
            + ("; the features keep their estimate and restart their differencing" if features else "")
            + ". A graph output that is not finite is never sent either (the fallback instead).",
            reference_runtime=REFERENCE_RUNTIME
            + (
                f" Exported with onnxruntime {self.meta.versions['onnxruntime']}."
                if "onnxruntime" in self.meta.versions
                else ""
            ),
        )
