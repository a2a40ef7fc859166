"""`caenet cache` and `caenet cache clean` on a real cache layout: folders named with the keys
that `plan()` gives the repo's MNIST config (so "referenced" is the real graph's answer), plus
an unreferenced key, work left in progress, a lock a live holder has and stale locks."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.commands.cache import human
from suite.experiment import load as load_config
from suite.stages.graph import plan

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "mnist_lenet.yaml")
OLD = time.time() - 90 * 86400


def _finished(folder: Path, size: int, mtime: float | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    (folder / "model.pt").write_bytes(b"w" * size)
    (folder / "_SUCCESS").write_text("2025-01-01T00:00:00")
    if mtime is not None:
        os.utime(folder / "_SUCCESS", (mtime, mtime))
    return folder


def _partial(folder: Path, size: int, mtime: float | None = None) -> Path:
    (folder / "ray" / "checkpoint_000000").mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    (folder / "ray" / "checkpoint_000000" / "state.pt").write_bytes(b"c" * size)
    if mtime is not None:
        for path in (folder / "ray" / "checkpoint_000000" / "state.pt", folder / "ray" / "checkpoint_000000", folder / "ray",
                     folder / "params.json", folder):
            os.utime(path, (mtime, mtime))
    return folder


@pytest.fixture
def cache(tmp_path):
    """The layout, its planned stages (smoke and full) and a lock held as a running stage holds it."""
    root = tmp_path / "cache"
    smoke = {s.name: s for s in plan(load_config(CONFIG, ["smoke=true", f"runtime.cache_dir={root}"]).effective())}
    full = {s.name: s for s in plan(load_config(CONFIG, [f"runtime.cache_dir={root}"]).effective())}
    mnist = root / "mnist"
    _finished(smoke["baseline"].path, 1000)
    _finished(smoke["entropy"].path, 200)
    _finished(full["baseline"].path, 3000, mtime=OLD)  # the full run's: referenced too, however old
    _finished(mnist / "baseline-0000000000000000", 5000)  # a key no config plans: unreferenced
    _finished(mnist / "caenet-00000000000000aa", 700, mtime=OLD)  # unreferenced and old
    _finished(mnist / "cmp-lenet-kd-1111111111111111", 4000)  # a competitor: not plan()'s to judge
    _finished(mnist / "cmp-lenet-wp-2222222222222222", 6000, mtime=OLD)
    _partial(smoke["caenet"].path.with_name(smoke["caenet"].path.name + ".partial"), 300)  # resumable: kept
    (smoke["caenet"].path.with_name(smoke["caenet"].path.name + ".lock")).touch()  # its killed run's lock: stale
    _partial(mnist / "features-3333333333333333.partial", 400)  # unreferenced, stale
    (mnist / "features-3333333333333333.lock").touch()
    _partial(mnist / "targets-4444444444444444.partial", 500)  # unreferenced, but a running stage holds its lock
    _finished(mnist / "evaluate-5555555555555555", 600)  # unreferenced, lock held: in use
    (mnist / "runs" / "20250101-000000-mnist_lenet").mkdir(parents=True)
    (mnist / "runs" / "20250101-000000-mnist_lenet" / "summary.json").write_bytes(b"s" * 2048)
    (mnist / "exports" / "old").mkdir(parents=True)
    os.utime(mnist / "exports" / "old", (OLD, OLD))
    (root / "cifar10" / "baseline-6666666666666666").mkdir(parents=True)  # another dataset; not finished
    handles = []
    for name in ("targets-4444444444444444.lock", "evaluate-5555555555555555.lock"):
        handle = open(mnist / name, "a+")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as suite.locks.file_lock holds it
        handles.append(handle)
    yield {"root": root, "mnist": mnist, "smoke": smoke, "full": full}
    for handle in handles:
        handle.close()


def _left(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_listing_sums_every_key_of_a_stage(cli, cache):
    out = cli(["cache", "--cache-dir", str(cache["root"])])
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.stdout.splitlines()[2:]}
    # baseline: the smoke, the full and the unreferenced key; bytes of every file in them
    assert rows[("mnist", "baseline")] == ["3", "0", *human(1000 + 3000 + 5000 + 3 * (2 + 19)).split()]
    assert rows[("mnist", "caenet")] == ["1", "1", *human(700 + 2 + 19 + 300 + 2).split()]
    assert rows[("mnist", "targets")] == ["0", "1", *human(500 + 2).split()]
    assert rows[("mnist", "cmp-lenet-kd")][:2] == ["1", "0"]
    assert rows[("mnist", "runs/")] == ["-", "-", "2.0", "KiB"] and rows[("mnist", "exports/")] == ["-", "-", "0", "B"]
    assert rows[("cifar10", "baseline-6666666666666666/")] == ["-", "-", "0", "B"]  # unfinished: its own row
    assert not any(".lock" in line for line in out.stdout.splitlines())
    total = sum(f.stat().st_size for f in cache["root"].rglob("*") if f.is_file())
    assert out.stdout.splitlines()[-1].split() == ["total", "8", "3", *human(total).split()]


def test_clean_removes_only_unreferenced_and_stale(cli, cache):
    before = _left(cache["mnist"])
    dry = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--keep", CONFIG, "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert _left(cache["mnist"]) == before  # a dry run removes nothing ...
    would = sorted(line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would remove  mnist/"))

    out = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--keep", CONFIG])
    assert out.returncode == 0, out.stderr
    removed = sorted(line.split()[1] for line in out.stdout.splitlines() if line.startswith("removed  mnist/"))
    assert removed == would  # ... and lists what the real one removes
    smoke, full = cache["smoke"], cache["full"]
    caenet = smoke["caenet"].path.name
    gone = ("baseline-0000000000000000", "caenet-00000000000000aa", "features-3333333333333333.partial")
    assert removed == [f"mnist/{n}" for n in gone]
    locks = f"2 stale lock file(s) (no process holds them): mnist/{caenet}.lock, mnist/features-3333333333333333.lock\n"
    assert f"would remove  {locks}" in dry.stdout and f"removed  {locks}" in out.stdout
    assert _left(cache["mnist"]) == {
        smoke["baseline"].path.name, smoke["entropy"].path.name, full["baseline"].path.name,  # referenced
        f"{caenet}.partial",  # work in progress of a referenced stage: a re-run resumes from it
        "cmp-lenet-kd-1111111111111111", "cmp-lenet-wp-2222222222222222",  # competitors: only by age
        "targets-4444444444444444.partial", "targets-4444444444444444.lock",  # held: in use
        "evaluate-5555555555555555", "evaluate-5555555555555555.lock",
        "runs", "exports"}  # result folders: never
    assert _left(cache["root"] / "cifar10") == {"baseline-6666666666666666"}
    assert "kept  mnist/targets-4444444444444444.partial  (in use" in out.stdout
    assert "kept  mnist/evaluate-5555555555555555  (in use" in out.stdout
    freed = (5000 + 21) + (700 + 21) + (400 + 2)
    assert f"freed {human(freed)} (5 removed; kept" in out.stdout

    again = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--keep", CONFIG])
    assert again.returncode == 0 and "freed 0 B (0 removed" in again.stdout


def test_clean_older_than_and_default_configs(cli, cache):
    """Without --keep the repo's configs are kept; --older-than spares new stages and lets old
    competitor stages go."""
    out = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--older-than", "30"])
    assert out.returncode == 0, out.stderr
    assert "configs/mnist_lenet.yaml" in out.stdout and "configs/boards.example.yaml" not in out.stdout
    left = _left(cache["mnist"])
    assert {"baseline-0000000000000000", "cmp-lenet-kd-1111111111111111", "features-3333333333333333.partial",
            cache["full"]["baseline"].path.name, f"{cache['smoke']['caenet'].path.name}.partial"} <= left  # new, or referenced
    assert not {"caenet-00000000000000aa", "cmp-lenet-wp-2222222222222222", "features-3333333333333333.lock"} & left
    assert "(not a pipeline stage, older than 30 days)" in out.stdout


def test_clean_keeps_what_a_set_changes_only_when_told(cli, cache):
    """--set applies to the kept configs: the stages of the changed config are kept, and the
    ones only the unchanged config planned go."""
    changed = {s.name: s for s in plan(load_config(CONFIG, ["smoke=true", "baseline.train.lr=0.01"]).effective())}
    _finished(cache["mnist"] / changed["baseline"].path.name, 10)
    out = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--keep", CONFIG, "--set", "baseline.train.lr=0.01"])
    assert out.returncode == 0, out.stderr
    left = _left(cache["mnist"])
    assert changed["baseline"].path.name in left and cache["smoke"]["baseline"].path.name not in left


def test_cache_dir_from_config_and_errors(cli, cache, tmp_path):
    out = cli(["cache", "--config", CONFIG, "--set", f"runtime.cache_dir={cache['root']}"])
    assert out.returncode == 0 and out.stdout.startswith(f"cache: {cache['root']}\n"), out.stderr
    before = _left(cache["mnist"])
    out = cli(["cache", "--cache-dir", str(cache["root"]), "clean", "--dry-run", "--keep", CONFIG])  # --cache-dir before clean
    assert out.returncode == 0 and "would remove  mnist/baseline-0000000000000000" in out.stdout
    assert _left(cache["mnist"]) == before

    clean = ["cache", "clean", "--cache-dir", str(cache["root"])]
    for args, message in ((["cache"], f"the default cache folder {tmp_path.resolve() / 'artifacts'}: no such folder"),
                          (["cache", "--cache-dir", str(tmp_path / "nope")], f"--cache-dir {tmp_path / 'nope'}: no such folder"),
                          (clean + ["--older-than", "a week"], "--older-than 'a week'"),
                          (clean + ["--older-than", "-1"], "--older-than '-1'"),
                          (clean + ["--keep", str(tmp_path / "no.yaml")], "no.yaml")):
        out = cli(args)
        assert out.returncode == 2 and out.stderr.startswith("caenet: error: ") and message in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _left(cache["mnist"]) == before  # a bad --keep fails before anything is removed


def test_help(cli):
    for args in (["cache", "--help"], ["cache", "clean", "--help"]):
        out = cli(args)
        text = " ".join(out.stdout.split())
        assert out.returncode == 0 and f"usage: caenet {' '.join(args[:-1])}" in text and "Example: caenet cache" in text, args
        assert "--profile NAME" in text and "--set KEY=VALUE" in text and "--cache-dir DIR" in text


def test_lock_another_process_has_open_stays(cli, cache):
    """A process that opened a lock file and waits for it (as `file_lock` does while another run
    holds it) keeps the file: removing it would hand the next run a second, separate lock."""
    lock = cache["mnist"] / "features-3333333333333333.lock"
    waiter = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print('open', flush=True); "
                               "time.sleep(120)", str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline() == "open\n"
        out = cli(["cache", "clean", "--cache-dir", str(cache["root"]), "--keep", CONFIG])
        assert out.returncode == 0, out.stderr
        left = _left(cache["mnist"])
        assert lock.name in left and "features-3333333333333333.partial" not in left  # the stale partial still goes
        assert f"{cache['smoke']['caenet'].path.name}.lock" not in left
    finally:
        waiter.kill()
        waiter.wait()
