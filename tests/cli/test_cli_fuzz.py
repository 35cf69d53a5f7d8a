"""Bad input to every `robot-rl` verb: one line `robot-rl: error: ...`, exit 2, no traceback, nothing written.

Each case runs the CLI in-process (``main()`` with ``sys.argv`` patched) and fails before any heavy work:
negative, zero, huge and wrongly typed numbers, unknown options, missing and corrupt files (random bytes
where an HDF5 file, a JSON file, a run or a policy folder is expected), folders that cannot be written
(skipped as root, who may write anyway) and paths of the wrong kind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli.errors import describe_os_error
from robot_rl.cli.main import main
from robot_rl.policies.checkpoint import BASE_RUN_KEYS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies" / "panda_push_diffusion"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HUGE = "99999999999999999999999"

# Placeholders: {demos} a valid demo file, {h5} {json} {yaml} random bytes, {run} a run folder and {policy} a policy
# folder holding random bytes, {list_run} {partial_run} {null_policy} JSON of the wrong shape, {bc_run} a BC run's
# config, {shipped} a copy of a shipped policy, {missing} a path that does not exist, {file} a regular file, {ro} a
# folder the user may not write, {tmp} the case's (empty) folder.
CASES: list[tuple[str, ...]] = [
    # envs
    ("envs", "--foo"),
    ("envs", "extra"),
    ("nope",),
    ("--foo",),
    (),
    # eval
    ("eval", "--episodes", "-1"),
    ("eval", "--episodes", "0"),
    ("eval", "--episodes", HUGE),
    ("eval", "--episodes", "abc"),
    ("eval", "--episodes", "1.5"),
    ("eval", "--episodes"),
    ("eval", "--seed", "-1"),
    ("eval", "--seed", str(2**31)),
    ("eval", "--seed", "abc"),
    ("eval", "--video-episodes", "0"),
    ("eval", "--threads", "0"),
    ("eval", "--inference-steps", "0"),
    ("eval", "--n-action-steps", "-3"),
    ("eval", "--prefetch-lead", "-1"),
    ("eval", "--takeover-hold", "-1"),
    ("eval", "--takeover-hold", "nan"),
    ("eval", "--takeover-hold", "inf"),
    ("eval", "--safety", "maybe"),
    ("eval", "--epsiodes", "3"),
    ("eval", "--env", "robot_rl/Nope-v0", "--episodes", "1"),
    ("eval", "--policy", "{missing}"),
    ("eval", "--policy", "{policy}", "--episodes", "1"),
    ("eval", "--policy", "{run}", "--episodes", "1"),
    ("eval", "--policy", "{list_run}", "--episodes", "1"),
    ("eval", "--policy", "{partial_run}", "--episodes", "1"),
    ("eval", "--policy", "{null_policy}", "--episodes", "1"),
    ("eval", "--randomize", "{missing}.yaml", "--episodes", "1"),
    ("eval", "--randomize", "{yaml}", "--episodes", "1"),
    ("eval", "--json", "{tmp}", "--episodes", "1"),
    ("eval", "--json", "{file}/report.json", "--episodes", "1"),
    ("eval", "--json", "{ro}/report.json", "--episodes", "1"),
    ("eval", "--video", "{ro}/rollout.mp4", "--episodes", "1"),
    ("eval", "--record", "{ro}/demos.hdf5", "--episodes", "1"),
    ("eval", "--record", "{h5}", "--episodes", "1"),
    ("eval", "--policy", "{shipped}", "--prefetch-lead", HUGE),
    ("eval", "--policy", "{shipped}", "--monitor-detector", "nope"),
    # collect
    ("collect",),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--seed", "-1"),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--seed", HUGE),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--episodes", "0"),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--episodes", HUGE),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--episodes", "two"),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--source", "joystick"),
    ("collect", "--env", "robot_rl/Nope-v0", "--out", "{tmp}/d.hdf5"),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}/d.hdf5", "--randomize", "{missing}.yaml"),
    ("collect", "--env", "PandaReach-v0", "--out", "{tmp}"),
    ("collect", "--env", "PandaReach-v0", "--out", "{ro}/d.hdf5"),
    ("collect", "--env", "PandaReach-v0", "--out", "{h5}"),
    ("collect", "--env", "PandaReach-v0", "--out", "{json}"),
    # data
    ("data",),
    ("data", "nope"),
    ("data", "info"),
    ("data", "info", "{missing}"),
    ("data", "info", "{h5}"),
    ("data", "info", "{json}"),
    ("data", "replay", "{missing}"),
    ("data", "replay", "{h5}"),
    ("data", "render", "{h5}", "--out", "{tmp}/demos.mp4"),
    ("data", "render", "{demos}", "--out", "{ro}/demos.mp4"),
    ("data", "render", "{demos}", "--out", "{tmp}"),
    ("data", "merge", "{h5}", "{demos}", "--out", "{tmp}/merged.hdf5"),
    ("data", "merge", "{missing}", "{demos}", "--out", "{tmp}/merged.hdf5"),
    ("data", "merge", "{demos}", "{demos}", "--out", "{ro}/merged.hdf5"),
    ("data", "split", "{demos}", "--val-fraction", "0"),
    ("data", "split", "{demos}", "--val-fraction", "1.5"),
    ("data", "split", "{demos}", "--val-fraction", "nan"),
    ("data", "split", "{demos}", "--seed", "-1"),
    ("data", "split", "{h5}"),
    ("data", "check", "{missing}"),
    ("data", "check", "{h5}"),
    ("data", "from-bag", "{missing}", "--out", "{tmp}/bag.hdf5"),
    # train bc | diffusion
    ("train",),
    ("train", "bc", "--data", "{demos}"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--max-demos", "0"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--max-demos", "-2"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--steps", "0"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--steps", HUGE),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--steps", "ten"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--batch-size", "-1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--lr", "-1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--lr", "nan"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--ema-decay", "1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--val-fraction", "1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--seed", "-1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--eval-seed", HUGE),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--threads", "0"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--warmup-steps", "-1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.hidden", "0"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.hidden", "a"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.dropout", "1"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.horizon", "0"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.n-action-steps", "9"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--policy.head", "cauchy"),
    ("train", "bc", "--data", "{missing}", "--out", "{tmp}/run"),
    ("train", "bc", "--data", "{h5}", "--out", "{tmp}/run"),
    ("train", "bc", "--data", "{json}", "--out", "{tmp}/run"),
    ("train", "bc", "--data", "{demos}", "--out", "{file}"),
    ("train", "bc", "--data", "{demos}", "--out", "{ro}/run"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--eval-randomize", "{missing}.yaml"),
    ("train", "bc", "--data", "{demos}", "--out", "{tmp}/run", "--eval-seed", "0"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.inference-steps", "0"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.inference-steps", "1000"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.train-timesteps", "0"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.unet-kernel", "4"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.unet-dims", "12"),
    ("train", "diffusion", "--data", "{demos}", "--out", "{tmp}/run", "--policy.embed-dim", "-8"),
    # train residual
    ("train", "residual", "--base", "{missing}", "--out", "{tmp}/res"),
    ("train", "residual", "--base", "{run}", "--out", "{tmp}/res"),
    ("train", "residual", "--base", "{partial_run}", "--out", "{tmp}/res"),
    ("train", "residual", "--base", "{null_policy}", "--out", "{tmp}/res"),
    ("train", "residual", "--base", "{shipped}", "--out", "{tmp}/res", "--steps", "0"),
    ("train", "residual", "--base", "{shipped}", "--out", "{tmp}/res", "--steps", HUGE),
    ("train", "residual", "--base", "{shipped}", "--out", "{tmp}/res", "--seed", "-1"),
    ("train", "residual", "--base", "{shipped}", "--out", "{tmp}/res", "--algo", "dqn"),
    ("train", "residual", "--base", "{shipped}", "--out", "{ro}/res"),
    # export
    ("export", "--run", "{missing}", "--out", "{tmp}/policy"),
    ("export", "--run", "{run}", "--out", "{tmp}/policy"),
    ("export", "--run", "{list_run}", "--out", "{tmp}/policy"),
    ("export", "--run", "{partial_run}", "--out", "{tmp}/policy"),
    ("export", "--run", "{run}", "--out", "{ro}/policy"),
    ("export", "--run", "{run}", "--out", "{file}"),
    ("export", "--run", "{run}", "--out", "{tmp}/policy", "--eval-episodes", "-1"),
    ("export", "--run", "{run}", "--out", "{tmp}/policy", "--inference-steps", "0"),
    ("export", "--run", "{run}", "--out", "{tmp}/policy", "--video-episodes", HUGE),
    # convert
    ("convert",),
    ("convert", "--run", "{missing}", "--trust-pickle"),
    ("convert", "--run", "{run}"),
    ("convert", "--run", "{file}", "--trust-pickle"),
    # pipeline
    ("pipeline", "--out", "{tmp}/p", "--demos", "0"),
    ("pipeline", "--out", "{tmp}/p", "--base-steps", "-1"),
    ("pipeline", "--out", "{tmp}/p", "--residual-steps", HUGE),
    ("pipeline", "--out", "{tmp}/p", "--episodes", "abc"),
    ("pipeline", "--out", "{tmp}/p", "--residual-algo", "dqn"),
    ("pipeline", "--out", "{tmp}/p", "--threads", "0"),
    ("pipeline", "--out", "{tmp}/p", "--env", "robot_rl/Nope-v0"),
    ("pipeline", "--out", "{tmp}/p", "--randomize", "{missing}.yaml"),
    ("pipeline", "--out", "{file}"),
    ("pipeline", "--out", "{ro}/p"),
    # monitor
    ("monitor",),
    ("monitor", "calibrate", "--policy", "{missing}"),
    ("monitor", "calibrate", "--policy", "{policy}"),
    ("monitor", "calibrate", "--policy", "{null_policy}"),
    ("monitor", "calibrate", "--policy", "{shipped}", "--episodes", "0"),
    ("monitor", "calibrate", "--policy", "{shipped}", "--alpha", "2"),
    ("monitor", "calibrate", "--policy", "{shipped}", "--seed", "-1"),
    ("monitor", "calibrate", "--policy", "{shipped}", "--rnd-clip", "nan"),
    ("monitor", "calibrate", "--policy", "{shipped}", "--rnd-steps", "-1"),
    ("monitor", "eval", "--policy", "{shipped}", "--episodes", "-1", "--out", "{tmp}/m"),
    ("monitor", "eval", "--policy", "{shipped}", "--window", "0", "--out", "{tmp}/m"),
    ("monitor", "eval", "--policy", "{shipped}", "--conditions", "nope", "--out", "{tmp}/m"),
    ("monitor", "eval", "--policy", "{shipped}", "--out", "{ro}/m"),
    # bench
    ("bench", "nope"),
    ("bench", "policy"),
    ("bench", "policy", "--run", "{bc_run}", "--out", "{tmp}/bench"),
    ("bench", "policy", "--run", "{missing}", "--out", "{tmp}/bench"),
    ("bench", "policy", "--run", "{list_run}", "--out", "{tmp}/bench"),
    ("bench", "envs", "--episodes", "0", "--out", "{tmp}/bench"),
    ("bench", "envs", "--out", "{file}"),
    ("bench", "envs", "--out", "{ro}/bench"),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid and corrupt inputs, made once: a 2-episode PandaReach demo file, random bytes in every format."""
    from robot_rl.data import collect

    root = tmp_path_factory.mktemp("fuzz_assets")
    noise = np.random.default_rng(0).bytes(4096)
    demos = root / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 2, demos, seed=0, progress=False)
    (root / "corrupt.hdf5").write_bytes(noise)
    (root / "corrupt.json").write_bytes(noise)
    (root / "corrupt.yaml").write_bytes(noise)
    (root / "a_file").write_text("not a folder\n")
    for folder, files in (("corrupt_run", ("config.json",)), ("corrupt_policy", ("metadata.json", "policy.onnx"))):
        (root / folder).mkdir()
        for name in files:
            (root / folder / name).write_bytes(noise)
    # JSON of the wrong shape: a list for a run's config, null for a policy card, a run's config without its keys.
    for folder, name, text in (
        ("list_run", "config.json", "[1, 2]"),
        ("null_policy", "metadata.json", "null"),
        ("partial_run", "config.json", json.dumps({"policy_type": "diffusion"})),
        ("bc_run", "config.json", json.dumps({"policy_type": "bc", **dict.fromkeys(BASE_RUN_KEYS, {})})),
    ):
        (root / folder).mkdir()
        (root / folder / name).write_text(text)
    shipped = root / "shipped"  # a copy: a check that failed to refuse must not touch the repository's policy
    shutil.copytree(SHIPPED, shipped, ignore=shutil.ignore_patterns("*.mp4"))
    read_only = root / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    return {
        "demos": demos,
        "h5": root / "corrupt.hdf5",
        "json": root / "corrupt.json",
        "yaml": root / "corrupt.yaml",
        "run": root / "corrupt_run",
        "policy": root / "corrupt_policy",
        "bc_run": root / "bc_run",
        "list_run": root / "list_run",
        "null_policy": root / "null_policy",
        "partial_run": root / "partial_run",
        "shipped": shipped,
        "missing": root / "missing",
        "file": root / "a_file",
        "ro": read_only,
    }


def _listing(*roots: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*") if p.is_file()
    )


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``robot-rl ARGS`` in-process; returns the exit code and everything printed (stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["robot-rl", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out, captured.out
    return stop.value.code, captured.err


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c) or "(no args)" for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: tuple[str, ...],
    assets: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if IS_ROOT and any("{ro}" in arg for arg in case):
        pytest.skip("root may write into a read-only folder")
    work = tmp_path / "work"
    work.mkdir()
    names = {**{k: str(v) for k, v in assets.items()}, "tmp": str(work)}
    args = [arg.format(**names) for arg in case]
    before = _listing(work, assets["demos"].parent)
    code, err = run_cli(args, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("robot-rl: error: "), err
    assert len(lines[0]) > len("robot-rl: error: ") + 10, err
    assert _listing(work, assets["demos"].parent) == before, "a refused command wrote something"


class TestMessages:
    """The wording of the common parse errors (the README's promise: one line that says what to fix)."""

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (["eval", "--episodes", "abc"], "--episodes expects an integer, got 'abc'"),
            # (--foo is close enough to eval's --log for a "did you mean"; --zzz is close to no option.)
            (["eval", "--zzz", "1"], "unknown option --zzz for `robot-rl eval`; see `robot-rl eval --help`"),
            (["eval", "--epsiodes", "3"], "did you mean --episodes?"),
            (["eval", "--episodes", HUGE], f"`episodes` must be in [1, 1000000000]. Got {HUGE}."),
            (["eval", "--seed", "-1"], "`seed` must be in [0, 2147483647]. Got -1."),
            (["collect"], "missing --env and --out for `robot-rl collect`"),
            (["data", "inf", "x"], "unknown command 'inf' for `robot-rl data`"),
            (["eval", "--safety", "maybe"], "--safety expects one of on, off; got 'maybe'"),
            (["train", "bc", "--data", "x", "--out", "y", "--max-demos", "0"], "`max_demos` must be in [1, "),
        ],
    )
    def test_message(
        self,
        args: list[str],
        expected: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        code, err = run_cli(args, monkeypatch, capsys)
        assert code == 2 and expected in err, err

    def test_help_still_prints_and_exits_0(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr(sys, "argv", ["robot-rl", "eval", "--help"])
        with pytest.raises(SystemExit) as stop:
            main()
        out = capsys.readouterr()
        assert stop.value.code in (0, None)
        assert "--episodes" in out.out and out.err == ""

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (PermissionError(errno.EACCES, "Permission denied", "/x/report.json"), "/x/report.json: permission denied"),
            (OSError(errno.ENOSPC, "No space left on device", "/x/d.hdf5"), "/x/d.hdf5: no space left on device"),
            (IsADirectoryError(errno.EISDIR, "Is a directory", "/x"), "/x: is a directory"),
            (
                OSError(
                    errno.EACCES,
                    "Unable to synchronously create file (unable to open file: name = '/x/d.hdf5', errno = 13, "
                    "error message = 'Permission denied', flags = 13, o_flags = 242)",
                ),
                "/x/d.hdf5: permission denied",
            ),
        ],
    )
    def test_os_errors_name_the_path_and_what_happened(self, error: OSError, expected: str) -> None:
        message = describe_os_error(error)
        assert message.startswith(expected) and "\n" not in message

    def test_a_parse_failure_this_cli_does_not_word_is_tyros_message_on_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setattr("robot_rl.cli.errors._message", lambda *args: None)  # tyro then draws its box
        code, err = run_cli(["eval", "--episodes", "abc"], monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("robot-rl: error: ") and "--episodes" in lines[0] and "abc" in lines[0], err
        assert not set(lines[0]) & set("│╭╮╰╯─"), err

    def test_an_os_error_deep_inside_is_one_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        def full_disk(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/demos.hdf5")

        monkeypatch.setattr("robot_rl.cli.main._envs", full_disk)
        code, err = run_cli(["envs"], monkeypatch, capsys)
        assert code == 2 and err.strip() == (
            "robot-rl: error: /data/demos.hdf5: no space left on device; free some space or choose another disk"
        )
