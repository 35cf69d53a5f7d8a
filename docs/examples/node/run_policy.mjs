// Run an exported robot_rl policy from its card alone: metadata.json + policy.onnx, Node and onnxruntime-node.
//
//   npm install --ignore-scripts            (in this folder: onnxruntime-node, CPU binaries bundled)
//   node run_policy.mjs POLICY_DIR STREAM.json
//
// STREAM.json: {"episodes": [{"seed": S, "observations": [{"observation": [...], "desired_goal": [...], ...}, ...],
//               "noise": [[h * a numbers], ...]}]}; "noise" (optional) replays given draws, one per chunk call, for
// identical chunks; without it the noise is drawn here, N(0, I). Prints {"actions": [[[a numbers] per period] per
// episode]}: the action of each period before clipping and safety filters. Every rule below is the card's
// (metadata.json "calling", "observation", "onnx"); tests/export/test_card_runtime.py checks the output against
// robot_rl's runtime bit for bit.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import ort from "onnxruntime-node";

const [dir, streamFile] = process.argv.slice(2);
const card = JSON.parse(readFileSync(join(dir, "metadata.json"), "utf8"));
const model = readFileSync(join(dir, card.onnx.file));
if (createHash("sha256").update(model).digest("hex") !== card.onnx_sha256) {
  throw new Error(`${dir}: policy.onnx is not the file metadata.json describes`);
}
// calling.reference_runtime
const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
});
const inputs = new Set(card.onnx.inputs.map((t) => t.name));
const n = card.n_obs_steps, d = card.observation.dim, h = card.horizon, k = card.n_action_steps;
const a = card.action.shape[0];
const tensor = (values, dims) => new ort.Tensor("float32", Float32Array.from(values), dims);
const empty = (dims) => new ort.Tensor("float32", new Float32Array(0), dims);

function gaussian() { // N(0, 1), Box-Muller
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

// observation.features: quadrotor_disturbance, its "formula" with the card's parameters (float64 throughout).
function disturbance(p) {
  let v = null, bodyZ = null, est = [0, 0, 0];
  return (obs, command) => {
    const vel = obs.slice(3, 6), z = [obs[8], obs[11], obs[14]];
    if (v !== null && command !== null) {
      const thrust = (Math.min(Math.max(command[0], -1), 1) + 1) / 2 * p.max_thrust;
      const expected = bodyZ.map((x) => x * (thrust / p.mass));
      expected[2] -= 9.81;
      est = est.map((e, i) => {
        const measured = (vel[i] - v[i]) / p.ctrl_dt;
        return Math.min(Math.max(e + p.gain * (measured - expected[i] - e), -p.limit), p.limit);
      });
    }
    [v, bodyZ] = [vel, z];
    return est.slice();
  };
}

async function episode({ observations, noise }) {
  const features = (card.observation.features ?? []).map((f) => {
    if (f.name !== "quadrotor_disturbance") throw new Error(`unknown observation feature ${f.name}`);
    return disturbance(f);
  });
  let history = [], chunk = null, s = 0, previous = null, command = null, draws = 0;
  const actions = [];
  for (let t = 0; t < observations.length; t++) {
    const o = observations[t];
    // calling.sequence: flatten (observation.segments, float64), append to the history.
    const flat = [];
    for (const seg of card.observation.segments) {
      if (seg.source === "desired_goal - achieved_goal") {
        flat.push(...o.desired_goal.map((x, i) => x - o.achieved_goal[i]));
      } else if (!seg.source.startsWith("feature ")) {
        flat.push(...[o[seg.source]].flat(Infinity).slice(seg.start, seg.stop));
      }
    }
    for (const f of features) flat.push(...f(o.observation, command));
    history = history.length === 0 ? Array(n).fill(flat) : [...history.slice(1), flat];
    const noRows = {};
    if (inputs.has("residual_obs")) {
      noRows.residual_obs = empty([0, d]);
      noRows.base_action = empty([0, a]);
      if (inputs.has("previous_action")) noRows.previous_action = empty([0, a]);
    }
    if (chunk === null || t >= s + k) { // chunk call
      const feeds = { obs_history: tensor(history.flat(), [1, n, d]), ...noRows };
      if (inputs.has("noise")) {
        const z = noise ? noise[draws++] : Array.from({ length: h * a }, gaussian);
        feeds.noise = tensor(z, [1, h, a]);
      }
      chunk = Array.from((await session.run(feeds)).actions.data);
      s = t;
    }
    let action = chunk.slice((t - s) * a, (t - s + 1) * a);
    if (inputs.has("residual_obs")) { // step call; the chunk path gets a batch of 0 (calling.empty_batch)
      const feeds = {
        obs_history: empty([0, n, d]),
        residual_obs: tensor(flat, [1, d]),
        base_action: tensor(action, [1, a]),
      };
      if (inputs.has("noise")) feeds.noise = empty([0, h, a]);
      if (inputs.has("previous_action")) feeds.previous_action = tensor(previous ?? action, [1, a]);
      action = Array.from((await session.run(feeds)).residual_action.data);
      previous = action;
    }
    command = action; // clip to [action.low, action.high] and filter before sending on a robot
    actions.push(action);
  }
  return actions;
}

const stream = JSON.parse(readFileSync(streamFile, "utf8"));
const out = [];
for (const ep of stream.episodes) out.push(await episode(ep));
console.log(JSON.stringify({ actions: out }));
