"""The README's and docs' commands, run as a user would paste them (issue 15, item 8; issue 34).

Every command line of a ```bash block in README.md and docs/*.md is checked: ``caenet run`` lines
plan with --dry-run, ``caenet sweep`` and ``caenet study`` lines load as their commands load
them, every other ``caenet`` line parses with the real parser and its config loads, every
``python jobs/...`` line parses with its job's parser, and every repository path a command names
exists. Inline code in prose is not a command line and is not checked."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# README.md first, then every page of docs/: the files whose commands are checked
DOCS = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((REPO / "docs").glob("*.md"))}}
CAENET = ("caenet", ".venv/bin/caenet")

# Template lines: a line with a placeholder for the user to fill in (``<ID>``, or a word in capitals
# naming a file or value, such as ``SWEEP.yaml``, ``BOARDS.yaml`` or ``CONFIG``) cannot run as
# written. Such lines, and only those, are skipped (``command_lines``); bash variables ($PWD) are
# not placeholders.
PLACEHOLDER = re.compile(r"<[^>\s]+>|(?<![\w$./=-])[A-Z][A-Z_]{2,}(?:\.ya?ml)?(?![\w=])")


def bash_block(after_heading: str) -> str:
    """The first ```bash block after the heading ``after_heading`` of the README."""
    start = README.index(after_heading)
    match = re.search(r"```bash\n(.*?)```", README[start:], re.S)
    assert match, f"no bash block after {after_heading!r}"
    return match.group(1)


def bash_lines() -> list[tuple[str, str]]:
    """(file, line) for every line of every ```bash block of README.md and docs/*.md, with its
    backslash continuations joined."""
    lines = []
    for source, text in DOCS.items():
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            lines += [(source, line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def command_lines() -> list[tuple[str, list[str]]]:
    """(file, words) for every simple command of the bash blocks (a line split at ``&&``, ``||``,
    ``;`` and ``|``), comments cut, leading ``VAR=value`` assignments dropped; template lines
    (``PLACEHOLDER``) left out."""
    commands = []
    for source, line in bash_lines():
        words = shlex.split(line, comments=True)
        if PLACEHOLDER.search(" ".join(words)):
            continue
        command: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", "||", ";", "|"):
                while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", command[0]):
                    command.pop(0)
                if command:
                    commands.append((source, command))
                command = []
            else:
                command.append(word)
    return commands


def caenet_lines(command: str | None = None) -> list[list[str]]:
    """Every ``caenet <command> ...`` of the README's and docs' bash blocks, as argv (without
    ``caenet``); ``command`` None: every subcommand."""
    return [words[1:] for _, words in command_lines()
            if len(words) > 1 and words[0] in CAENET and (command is None or words[1] == command)]


def in_repo(argv: list[str]) -> list[str]:
    return [str(REPO / a) if a.startswith("configs/") else a for a in argv]


def test_every_readme_run_line_parses_and_plans(cli):
    """Each ``caenet run`` line of the README and docs: its config and --set keys validate, and
    ``--dry-run`` plans it."""
    runs = caenet_lines("run")
    assert len(runs) >= 10
    for argv in runs:
        argv = in_repo(argv)
        done = cli([*(a for a in argv if a != "--dry-run"), "--dry-run"])
        assert done.returncode == 0, (argv, done.stderr)
        assert "would run" in done.stdout or "cached" in done.stdout


def test_every_readme_sweep_line_loads():
    """Each ``caenet sweep`` example: the sweep file, its space and --set keys validate, as the
    command loads them (a line that fails as written fails here)."""
    from suite.cli import build_parser
    from suite.sweep.sweep_file import load_sweep

    sweeps = caenet_lines("sweep")
    assert len(sweeps) >= 5
    for argv in sweeps:
        args = build_parser(argv).parse_args(argv)
        load_sweep(REPO / args.sweep, args.set, args.profile, args.allow_identical)


def test_every_readme_study_line_loads(cli):
    """Each ``caenet study`` example: the study file, its variants and --set keys validate."""
    studies = caenet_lines("study")
    assert len(studies) >= 5
    for argv in studies:
        argv = in_repo(argv)
        done = cli([*(a for a in argv if a != "--dry-run"), "--dry-run"])
        assert done.returncode == 0, (argv, done.stderr)
        assert " cells: " in done.stdout


def test_every_other_caenet_line_parses():
    """Every other ``caenet`` line (compare, export, edge, report, runs, cache, data, models,
    methods): it parses with the command's real parser, and the config it names loads with its
    --set and --profile (a line that fails as written fails here)."""
    from suite.cli import build_parser
    from suite.commands import catalog
    from suite.experiment import load

    others = [argv for argv in caenet_lines() if argv[0] not in ("run", "sweep", "study")]
    assert {argv[0] for argv in others} >= {"compare", "export", "edge", "report", "runs", "cache", "data", "models", "methods"}
    for argv in others:
        assert argv[0] in catalog(), argv
        args = build_parser(argv).parse_args(argv)
        config = getattr(args, "config", None) or getattr(args, "run", None)
        if config and config.endswith((".yaml", ".yml")):
            load(REPO / config, list(getattr(args, "set", [])), getattr(args, "profile", None))


def test_every_path_a_command_names_exists():
    """Every file of the repository that a command line names (configs/, jobs/, benchmarks/,
    scripts/, tests/, docs/, the cluster files) is there."""
    roots = ("configs/", "jobs/", "benchmarks/", "scripts/", "tests/", "docs/", ".ci/")
    named = [(source, word) for source, words in command_lines() for word in words
             if word.startswith(roots) or word in ("cluster.yaml", "cluster-onprem.yaml")]
    assert len(named) >= 40
    missing = [(source, word) for source, word in named if not (REPO / word).exists()]
    assert not missing, missing


def test_caenet_lines_cover_every_bash_line_that_names_caenet():
    """No ``caenet`` command escapes the checks above: every bash line that names caenet is a
    template (``PLACEHOLDER``) or yields a checked ``caenet`` command; the commands seen are
    README's and docs' both."""
    checked = {(source, " ".join(words)) for source, words in command_lines() if words[0] in CAENET}
    for source, line in bash_lines():
        words = shlex.split(line, comments=True)
        if any(w in CAENET for w in words) and not PLACEHOLDER.search(" ".join(words)):
            assert any(s == source and c in " ".join(words) for s, c in checked), (source, line)
    assert {source for source, _ in checked} >= {"README.md", "docs/deploying.md", "docs/results.md", "docs/ablation.md"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_relative_link_resolves():
    """Every relative link and image of README.md and docs/*.md names a file of the repository,
    and its #anchor a heading of that file (the paper, outside the repository, is not linked)."""
    links = 0
    for source, text in DOCS.items():
        here = (REPO / source).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            links += 1
            path, _, anchor = target.partition("#")
            file = (here / path).resolve() if path else REPO / source
            assert file.is_relative_to(REPO) and file.exists(), (source, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, (source, target)
    assert links >= 30


def _checkout_copy(dest: Path) -> None:
    """The checkout's tracked and untracked-not-ignored files, as a fresh clone plus set-up would have them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(REPO / ".venv")  # what `bash scripts/setup.sh` made


@pytest.mark.slow
def test_readme_job_section_runs_as_written(tmp_path, data_root):
    """The job section's lines, verbatim, in a copy of the checkout beside ``../shared/data``.

    They run in their own PID and mount namespaces (``unshare``, as root) with a tmpfs on
    /tmp/ray: the block's ``ray stop`` then stops only the head it started, and the Ray folder
    of any other Ray on the machine is out of its reach."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root (PID namespace for the block's `ray stop`)")
    block = bash_block("### Jobs on a running cluster")
    checkout = tmp_path / "caenet-suite"
    _checkout_copy(checkout)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "CAENET_"))}
    script = "set -euo pipefail\nmkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray\n" + block
    done = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "succeeded" in out, out[-3000:]  # `ray job submit`: "Job '...' succeeded"
    # the job's log is the suite's own lines: its epochs, not its workers' output under Ray's prefixes
    assert "[caenet] epoch 1/1  train_loss=" in out and "pid=" not in out and "core_worker" not in out, out[-3000:]

    from mlflow.tracking import MlflowClient

    store = checkout / "mlruns"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("caenet")
    assert exp.artifact_location.startswith((store / "artifacts").as_uri()), exp.artifact_location  # not in the job's copy
    runs = client.search_runs([exp.experiment_id])
    pipeline = [r for r in runs if r.data.tags.get("kind") == "run"]
    assert len(pipeline) == 1 and pipeline[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(pipeline[0].info.run_id)} >= {"config.yaml", "summary.json"}
    stages = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == pipeline[0].info.run_id}
    assert {"baseline", "autoencoder", "caenet", "evaluate"} <= stages
    assert 0.0 <= pipeline[0].data.metrics["caenet.test_acc"] <= 1.0  # evaluated (1 epoch: no accuracy claim)
    summary = json.loads(next((checkout / "artifacts" / "mnist" / "runs").glob("*/summary.json")).read_text())
    assert summary["mlflow_run_id"] == pipeline[0].info.run_id
    assert not (checkout / "mlruns" / "0").exists() and not list(checkout.glob("mlflow.db"))  # nothing in MLflow's defaults


def test_every_readme_job_line_parses(monkeypatch):
    """Each ``python jobs/X.py ...`` line of the README and docs: its arguments parse with that
    job's parser and its config (or sweep file) and --set keys load."""
    from tests.conftest import load_job_line

    monkeypatch.setenv("PWD", str(REPO))
    seen = set()
    for _, line in bash_lines():
        if "python jobs/" not in line:
            continue
        job, *argv = shlex.split(os.path.expandvars(line.split("python ", 1)[1]), comments=True)
        seen.add(job)
        load_job_line(Path(job).name, argv)
    assert seen == {"jobs/pipeline.py", "jobs/sweep.py", "jobs/study.py", "jobs/scaling.py"}
