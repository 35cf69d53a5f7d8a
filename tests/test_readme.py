"""README.md as written: every command it names parses with the CLI, the short ones run, every result links to docs/.

The commands come from the README itself (fenced ``bash`` blocks, inline code, the command-line table), so a
renamed verb or option, or a command that stopped working, fails here.

- Every ``robot-rl`` command of a fenced block is parsed by the CLI's own tyro parser (``robot_rl.cli.errors.parse``)
  and its number checks, as ``robot-rl`` does before starting work (a ``sweep``: its options, then each trial's
  command line, as ``robot-rl sweep --dry-run`` makes them). A folder an earlier README command writes (a
  run, a policy) is read as a shipped policy folder (``STAND_IN``): the parser checks that ``--policy`` exists.
- The short ones run for real, in README order, through the ``robot-rl`` executable: ``envs``, ``eval`` of the
  expert or of a shipped policy, ``collect``, ``data info``. Overrides, because the README's counts are for
  measurements: ``--episodes`` becomes 2 (1 per family for ``--suite``); files the command writes go to a
  temporary folder; ``--video`` is left out (offscreen rendering on a CPU takes most of a minute per episode
  under load; ``tests/cli/test_cli.py`` writes a video); a teleop ``--source`` becomes ``expert`` (a device needs
  a person); ``data info FILE`` reads the file the README's own earlier ``collect`` wrote. Training, export, the
  pipeline, the monitor's calibration and the evaluation of a run the README trains first are parsed only
  (minutes to hours).
- Every ``robot-rl`` command in inline code and in the command-line table names existing verbs (each alternative
  of ``a|b``) and only options of that verb (from its ``--help``); every ``--option`` anywhere is one of some verb.
- Other programs the README runs are checked for what they need (files, extras, modules); an unknown one fails
  until it is classified here.
- A measured success figure (``0.81 [0.72, 0.87]``) and a "Measured:" sentence link to their docs/ page, and every
  relative link resolves (file and heading anchor).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import tomllib

from robot_rl.cli.checks import check_numbers
from robot_rl.cli.commands import Command
from robot_rl.cli.errors import command_tree, parse

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PROSE = FENCE.sub("", README)
"""The README without its fenced blocks."""
SMALL_EPISODES = 2
"""Episodes of a README command run for real (1 per family for a suite)."""
TREE = command_tree(Command)
"""The verbs: nested dicts of subcommand names, the options dataclasses at the leaves."""


# ----------------------------------------------------------------------------------------------------- extraction
def fenced(lang: str) -> list[str]:
    """The fenced blocks of one language, in order."""
    return [m.group(2) for m in FENCE.finditer(README) if m.group(1) == lang]


def shell_commands(block: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped, ``a && b`` split."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        commands += [part.strip() for part in line.split(" && ") if part.strip()]
    return commands


def inline_code() -> list[str]:
    """Inline code spans of the prose (a span may wrap a line; ``\\|`` in tables is ``|``)."""
    return [" ".join(span.replace("\\|", "|").split()) for span in re.findall(r"`([^`]+)`", PROSE)]


def table_commands() -> list[str]:
    """The command-line table's first column, as ``robot-rl ...`` commands."""
    section = README.split("| verb | what it does |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "the README's command-line table has no rows"
    return ["robot-rl " + re.match(r"\| `(.+?)` \|", row).group(1).replace("\\|", "|") for row in rows]


COMMANDS = [c for block in fenced("bash") for c in shell_commands(block)]
"""Every command of the README's fenced shell blocks, in order."""
ROBOT_RL = [c for c in COMMANDS if c.startswith("robot-rl ")]
INLINE_ROBOT_RL = [span for span in inline_code() if span.startswith("robot-rl ")] + table_commands()


# ------------------------------------------------------------------------------------------------ verbs and options
def leaves(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, node in tree.items():
        found += leaves(node, (*path, name)) if isinstance(node, dict) else [(*path, name)]
    return found


@functools.cache
def help_text(argv: tuple[str, ...]) -> str:
    """What ``robot-rl ARGV --help`` prints (in-process, wide, so option names stay on their lines)."""
    from robot_rl.cli.main import run

    out = io.StringIO()
    code: Any = 0
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "300"
    with contextlib.redirect_stdout(out):
        try:
            if argv[:1] == ("bench",):
                code = run([*argv, "--help"])
            else:
                parse(Command, [*argv, "--help"], description="")
        except SystemExit as stop:
            code = stop.code
        finally:
            if saved is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = saved
    assert code in (0, None), f"`robot-rl {' '.join(argv)} --help` exited with {code}"
    return out.getvalue()


def options_in_help(text: str) -> set[str]:
    """The options a ``--help`` lists in its option column (``--view, --no-view``: both)."""
    found = set()
    for line in text.splitlines():
        match = re.match(r"^[│|]?\s{0,2}((?:-\w, )?--[a-z][\w.-]*(?:, --[a-z][\w.-]*)*)", line)
        if match:
            found |= {opt for opt in match.group(1).split(", ") if opt.startswith("--")}
    return found


@pytest.fixture(scope="module")
def verb_options() -> dict[tuple[str, ...], set[str]]:
    """Each verb's options, from its ``--help``."""
    return {verb: options_in_help(help_text(verb)) for verb in leaves(TREE)}


def verb_of(command: str) -> tuple[list[tuple[str, ...]], list[str]]:
    """The verbs a README command names (each alternative of ``a|b``) and the words after them."""
    words = shlex.split(command.replace("[", " ").replace("]", " "))[1:]
    paths: list[tuple[str, ...]] = [()]
    node: Any = TREE
    while words and isinstance(node, dict):
        names = words[0].split("|")
        unknown = [n for n in names if n not in node]
        assert not unknown, f"`{command}`: {unknown} is not a verb here; valid: {sorted(node)}"
        paths = [(*p, n) for p in paths for n in names]
        node = node[names[0]]
        words = words[1:]
    return paths, words


def option_names(command: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w.-]*[a-z0-9]", command))


# ---------------------------------------------------------------------------------------------------- the commands
def test_the_readme_has_commands_of_every_kind():
    assert len(ROBOT_RL) >= 10 and len(INLINE_ROBOT_RL) >= 10
    assert {shlex.split(c)[1] for c in ROBOT_RL} >= {"envs", "eval", "collect", "data", "train", "export", "monitor"}


def readme_outputs(before: str) -> set[str]:
    """What the README's commands before ``before`` write (``--out`` values)."""
    earlier = ROBOT_RL[: ROBOT_RL.index(before)]
    return {argv[i + 1] for c in earlier if "--out" in (argv := shlex.split(c)) for i in [argv.index("--out")]}


STAND_IN = "policies/panda_push_diffusion"
"""Parsing only: what a command reads in place of a folder an earlier README command writes (a run, a policy), as
the parser checks that a folder named by ``--policy`` exists."""


def sweep_trials(args: list[str]) -> list[list[str]]:
    """The trials' command lines of ``robot-rl sweep ARGS`` (its options and training command checked first)."""
    from robot_rl.sweep.config import Sweep, check_command, trials

    split = args.index("--") if "--" in args else len(args)
    options = parse(Sweep, args[:split], description="", prefix=("sweep",))
    check_numbers(options)
    check_command(args[split + 1 :], options.grid)
    return [list(trial.argv) for trial in trials(options, args[split + 1 :])]


@pytest.mark.parametrize("command", ROBOT_RL)
def test_every_fenced_command_parses_with_the_cli(command):
    outputs = readme_outputs(command)
    argv = [STAND_IN if word in outputs and not Path(word).suffix else word for word in shlex.split(command)[1:]]
    if argv[:1] == ["sweep"]:
        for trial in sweep_trials(argv[1:]):
            check_numbers(parse(Command, trial, description=""))
        return
    parsed = parse(Command, argv, description="")
    check_numbers(parsed)


@pytest.mark.parametrize("command", INLINE_ROBOT_RL)
def test_inline_commands_name_existing_verbs_and_their_options(command, verb_options):
    paths, _ = verb_of(command)
    wanted = option_names(command)
    if paths[0][:1] == ("bench",):
        _, words = verb_of(command)
        names = words[0].split("|") if words else []
        assert names, f"`{command}`: `robot-rl bench` needs a benchmark name"
        for name in names:
            assert options_in_help(help_text(("bench", name))) >= wanted - {"--help"}
        return
    for path in paths:
        missing = wanted - verb_options[path]
        assert not missing, f"`{command}`: `robot-rl {' '.join(path)}` has no {sorted(missing)}"


def test_every_option_named_anywhere_exists(verb_options):
    known = set().union(*verb_options.values())
    spans = [s for s in inline_code() if s.split()[0] not in OTHER_PROGRAMS]
    named = set().union(*(option_names(s) for s in [*spans, *ROBOT_RL]))
    bench_names = [w for c in INLINE_ROBOT_RL if c.startswith("robot-rl bench ") for w in verb_of(c)[1][0].split("|")]
    known |= set().union(*(options_in_help(help_text(("bench", n))) for n in bench_names))
    assert not named - known, f"options no verb has: {sorted(named - known)}"


OTHER_PROGRAMS = ("python", "python3", "pip", "bash", "ruff", "tensorboard", "apt-get")
"""Programs whose options the README names in inline code (``ruff format --check``): not robot-rl's."""


def _value(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv else None


def _set(argv: list[str], option: str, value: str) -> list[str]:
    if option in argv:
        argv = list(argv)
        argv[argv.index(option) + 1] = value
        return argv
    return [*argv, option, value]


def for_real(argv: list[str], tmp: Path, made: dict[str, Path]) -> list[str] | None:
    """The command to run for real (with the overrides the module docstring lists), or None: parse only."""
    if argv[0] == "envs":
        return argv
    if argv[:2] == ["data", "info"]:
        return ["data", "info", str(made[argv[2]])] if argv[2] in made else None
    if argv[0] == "collect":
        out = tmp / Path(_value(argv, "--out")).name
        made[_value(argv, "--out")] = out
        argv = _set(_set(argv, "--episodes", str(SMALL_EPISODES)), "--out", str(out))
        return _set(argv, "--source", "expert") if _value(argv, "--source") not in (None, "expert") else argv
    if argv[0] == "eval":
        policy = _value(argv, "--policy") or "expert"
        if policy not in ("expert", "random") and not (REPO / policy / "metadata.json").is_file():
            return None  # a training run the README makes first
        argv = _set(argv, "--episodes", "1" if "--suite" in argv else str(SMALL_EPISODES))
        if "--video" in argv:  # CPU rendering costs about 0.25 s a frame; tests/cli/test_cli.py writes a video
            i = argv.index("--video")
            argv = argv[:i] + argv[i + 2 :]
        for option in ("--json", "--plot", "--log"):
            if option in argv:
                argv = _set(argv, option, str(tmp / Path(_value(argv, option)).name))
        return argv
    return None


def robot_rl_executable() -> list[str]:
    script = Path(sys.executable).parent / "robot-rl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "robot_rl.cli.main"]


def test_the_short_commands_run(tmp_path):
    made: dict[str, Path] = {}
    ran = []
    for command in ROBOT_RL:
        argv = for_real(shlex.split(command)[1:], tmp_path, made)
        if argv is None:
            continue
        result = subprocess.run(
            [*robot_rl_executable(), *argv], cwd=REPO, capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, f"`robot-rl {shlex.join(argv)}` (README: `{command}`) failed:\n{result.stderr}"
        ran.append(argv[0])
    assert {"envs", "eval", "collect", "data"} <= set(ran)
    assert all(Path(p).is_file() for p in made.values())


# ---------------------------------------------------------------------------------------------- other programs
def _extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_other(command: str) -> None:
    """What a non-``robot-rl`` README command needs, present; an unknown program fails."""
    words = shlex.split(command)
    program = words[0]
    if program == "apt-get" or words[:3] == ["python3", "-m", "venv"] or program == ".":
        return  # the machine's setup (a fresh Debian as the README says)
    if words[:2] == ["pip", "install"]:
        for target in words[2:]:
            if target.startswith("torch=="):
                import torch

                assert torch.__version__.split("+")[0] == target.split("==")[1], "README pins another torch"
            elif target.startswith(".["):
                assert set(target[2:-1].split(",")) <= _extras(), f"`{command}`: no such extra"
            elif target != "-e":
                assert (REPO / target / "setup.py").is_file() or (REPO / target / "pyproject.toml").is_file(), target
        return
    if words[0] == "bash":
        assert (REPO / words[1]).is_file(), f"`{command}`: {words[1]} is missing"
        return
    if program == "torchrun":  # torchrun's own options, then a robot-rl command line (robot_rl.cli.main)
        from torch.distributed.run import get_args_parser

        launch = get_args_parser().parse_args(words[1:])
        assert launch.module and launch.training_script == "robot_rl.cli.main", f"`{command}`: not robot_rl's CLI"
        check_numbers(parse(Command, launch.training_script_args, description=""))
        return
    if words[0] == "tensorboard":
        assert find_spec("tensorboard") is not None, "`tensorboard` is not installed with the dev extra"
        return
    if words[:2] == ["python", "-m"]:
        assert find_spec(words[2]) is not None, f"`{command}`: no module {words[2]}"
        for word in words[3:]:
            if "/" in word:
                assert (REPO / word).exists(), f"`{command}`: {word} is missing"
        return
    if words[0] == "python" and words[1].endswith(".py"):
        assert (REPO / words[1]).is_file(), f"`{command}`: {words[1]} is missing"
        return
    raise AssertionError(f"README command `{command}` is not classified: say in tests/test_readme.py how to check it")


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.startswith("robot-rl ")])
def test_other_fenced_commands_have_what_they_need(command):
    check_other(command)


def test_inline_installs_and_scripts_exist():
    spans = [s for s in inline_code() if s.startswith(("pip install", "python bench/"))]
    assert spans
    for span in spans:
        for part in span.split(" && "):
            check_other(part)
    for script in re.findall(r"`(bench_\w+\.py)`", PROSE):
        assert (REPO / "bench" / script).is_file(), f"bench/{script} is named in the README and missing"


def test_python_blocks_run(monkeypatch):
    """The Python in the README, with ``observation`` and ``now`` from a real env (the block leaves them to you)."""
    import robot_rl

    monkeypatch.chdir(REPO)
    blocks = fenced("python") + [s for s in inline_code() if s.startswith("import robot_rl")]
    assert blocks
    env = robot_rl.make("robot_rl/PandaPush-v0")
    observation, _ = env.reset(seed=1_000_000)
    for block in blocks:
        namespace: dict[str, Any] = {"observation": observation, "now": 0.0}
        exec(compile(block, "README.md", "exec"), namespace)
        for value in namespace.values():
            if hasattr(value, "close") and value is not env and type(value).__module__.startswith("robot_rl"):
                value.close()
    env.close()


# -------------------------------------------------------------------------------------------- results and links
def test_every_measured_result_links_to_its_docs_page():
    for line in PROSE.splitlines():
        if re.search(r"\d\.\d+ \[\d\.\d+, \d\.\d+\]", line):
            assert "](docs/" in line, f"a measured result without its docs/ page: {line.strip()}"
    for paragraph in PROSE.split("\n\n"):
        if re.search(r"\bMeasured\b", paragraph):
            assert "](docs/" in paragraph, f"'Measured' without a docs/ link: {paragraph.strip()[:120]}"


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_relative_link_resolves():
    links = re.findall(r"\]\(([^)\s]+)\)", PROSE)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"\w+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = REPO / target
        assert path.exists(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"README links to {link}: no such heading in {target}"
