"""``caenet cache``: how much disk the stage cache takes, per dataset and stage; ``caenet cache
clean``: remove what no config uses any more.

Every change of a setting gives its stages new keys, so ``<runtime.cache_dir>`` only grows:
old keys, work left behind by killed runs (``<stage>-<key>.partial/``) and their lock files.
``clean`` is conservative: it removes a pipeline stage only when no kept config's plan
(``suite.stages.graph.plan``) names it, stages of other kinds (competitors) only by age, never
the folders the commands write results to (``runs/``, ``exports/``, ``edge/``, ``report/``,
``sweeps/``, ``compare/``), and never anything whose lock a running process holds.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from suite.commands.arguments import add_set, config_of, overrides
from suite.config import ConfigError, ExperimentConfig, RuntimeConfig
from suite.experiment import resolve as resolve_config
from suite.locks import try_lock
from suite.pipeline.run_info import REPO_ROOT
from suite.pipeline.stage import LOCK, PARTIAL, STAGE_ENTRY, SUCCESS
from suite.stages.graph import plan

ORDER = 65
HELP = "the stage cache's size per dataset and stage; `caenet cache clean` removes stages no config uses"

STALE_LOCK = "stale lock"


def add_parser(sub) -> None:
    cache = sub.add_parser("cache", help=HELP,
                           description="Lists the stage cache (runtime.cache_dir, ./artifacts by default): per dataset, "
                           "each stage with its finished and unfinished (.partial) folders over all keys and their size, "
                           "each other folder (runs/, exports/, ...) as its own row, and the total. "
                           "`caenet cache clean --help` tells what cleaning removes. Example: caenet cache --cache-dir artifacts")
    _add_where(cache)
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    clean = actions.add_parser("clean", help="remove unreferenced stages and stale work in progress",
                               description="Removes (1) finished pipeline stages that no kept config uses: kept are the "
                               "stages of `caenet run` (as planned by `caenet run --dry-run`) for every --keep CONFIG and "
                               "the --config, each as given and with smoke=true, or, without --keep, for every "
                               "configs/*.yaml of the suite; (2) unfinished <stage>-<key>.partial folders of such stages "
                               "(those of kept stages hold the checkpoints a re-run resumes from and stay); (3) stale "
                               "<stage>-<key>.lock files. Stages of other kinds (the competitors of `caenet compare`, "
                               "cmp-*) go only with --older-than; with it, every removed stage must also have finished "
                               "(or last been written) more than DAYS ago. Result folders (runs/, exports/, edge/, "
                               "report/, sweeps/, compare/) are never touched, nor anything whose lock a running process "
                               "holds. Note: stages of sweep trials and of configs changed with --set are unreferenced "
                               "unless kept with the same --set. "
                               "Example: caenet cache clean --keep configs/mnist_lenet.yaml --older-than 30 --dry-run")
    _add_where(clean, suppress=True)
    clean.add_argument("--keep", nargs="+", action="extend", metavar="CONFIG",
                       help="configs (YAML or MLflow run id of `caenet run`) whose stages stay; repeatable "
                       "(default: every configs/*.yaml of the suite); --profile and --set apply to them")
    clean.add_argument("--older-than", metavar="DAYS",
                       help="remove only stages finished (or partial folders last written) more than DAYS days ago; "
                       "also allows removing old competitor stages")
    clean.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    clean.set_defaults(func=main_clean)
    cache.set_defaults(func=main)


def _add_where(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--cache-dir / --config / --profile / --set. On ``clean`` their defaults are suppressed,
    so that ``caenet cache --cache-dir X clean`` keeps the X given before the action (argparse
    lets a sub-parser's defaults overwrite its parent's values)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cache-dir", metavar="DIR",
                       help=f"the cache folder (default: runtime.cache_dir's default, ./{RuntimeConfig().cache_dir})")
    where.add_argument("--config", metavar="CONFIG", help="take the cache folder from this config's runtime.cache_dir")
    add_set(parser, "--set runtime.cache_dir=/abs/cache")
    if suppress:
        for action in parser._actions:
            if action.dest in ("cache_dir", "config", "profile", "set"):
                action.default = argparse.SUPPRESS


# ------------------------------------------------------------------------------------ listing


def main(args) -> int:
    root = cache_dir(args)
    print(f"cache: {root}")
    rows, totals = [], [0, 0, 0]
    for dataset in _datasets(root):
        stages: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # finished, partial, bytes
        others: list[tuple[str, int]] = []
        for entry in sorted(dataset.iterdir()):
            match = STAGE_ENTRY.match(entry.name)
            if match and match["suffix"] == LOCK:
                continue  # empty; `cache clean` removes the stale ones
            size = tree_bytes(entry)
            if match and entry.is_dir() and (match["suffix"] == PARTIAL or (entry / SUCCESS).exists()):
                counts = stages[match["stage"]]
                counts[match["suffix"] == PARTIAL] += 1
                counts[2] += size
            else:
                others.append((entry.name + ("/" if entry.is_dir() else ""), size))
        for name, (done, partial, size) in sorted(stages.items()):
            rows.append((dataset.name, name, str(done), str(partial), human(size)))
            totals = [totals[0] + done, totals[1] + partial, totals[2] + size]
        for name, size in others:
            rows.append((dataset.name, name, "-", "-", human(size)))
            totals[2] += size
    rows.append(("total", "", str(totals[0]), str(totals[1]), human(totals[2])))
    print(_table([("dataset", "stage or folder", "finished", "partial", "size")] + rows, right=(2, 3, 4)))
    return 0


def cache_dir(args) -> Path:
    """The cache folder a command line names: --cache-dir, else --config's runtime.cache_dir,
    else the default; it must exist (a typo would otherwise list, or clean, nothing)."""
    if getattr(args, "cache_dir", None):
        root, flag = Path(args.cache_dir), "--cache-dir"
    elif getattr(args, "config", None):
        root, flag = Path(config_of(args, args.config).runtime.cache_dir), f"runtime.cache_dir of {args.config}"
    else:
        root, flag = Path(RuntimeConfig().cache_dir), "the default cache folder"
    root = root.resolve()
    if not root.is_dir():
        raise ConfigError(f"{flag} {root}: no such folder; give the cache runs wrote to with --cache-dir DIR "
                          "or --config CONFIG (runtime.cache_dir, ./artifacts by default)")
    return root


def _datasets(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (symbolic links not followed; files vanishing meanwhile skipped)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def newest_mtime(path: Path) -> float:
    """When anything under ``path`` was last written: a partial folder's checkpoints are deep inside."""
    newest = path.stat().st_mtime
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _table(rows: list[tuple], right: tuple[int, ...] = ()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()
                     for r in rows)


# ------------------------------------------------------------------------------------ cleaning


@dataclass
class Outcome:
    removed: list[tuple[str, int, str]] = field(default_factory=list)  # (dataset/entry, bytes, why)
    in_use: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # why -> count


def main_clean(args) -> int:
    older_than = _days(args.older_than)
    root = cache_dir(args)
    keep, referenced, pipeline = kept_stages(args)
    print(f"cache: {root}\nkeeping the stages of: {', '.join(keep)} (each also with smoke=true)")
    done = clean(root, referenced, pipeline, older_than, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    locks = [name for name, _, why in done.removed if why == STALE_LOCK]
    for name, size, why in done.removed:
        if why != STALE_LOCK:
            print(f"{verb}  {name}  {human(size)}  ({why})")
    if locks:  # every stage leaves one: a line each would drown the rest
        print(f"{verb}  {len(locks)} stale lock file(s) (no process holds them): {', '.join(sorted(locks)[:3])}"
              + (", ..." if len(locks) > 3 else ""))
    for name in done.in_use:
        print(f"kept  {name}  (in use: a running process holds its lock)")
    kept = ", ".join(f"{n} {why}" for why, n in sorted(done.kept.items()))
    freed = human(sum(size for _, size, _ in done.removed))
    print(f"{'would free' if args.dry_run else 'freed'} {freed} ({len(done.removed)} {'to remove' if args.dry_run else 'removed'}"
          f"{'; kept ' + kept if kept else ''})" + (": dry run, nothing was removed" if args.dry_run else ""))
    return 0


def _days(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not math.isfinite(days) or days < 0:
        raise ConfigError(f"--older-than {text!r}: expected a number of days (0 or more), e.g. --older-than 30")
    return days


def kept_stages(args) -> tuple[list[str], set[tuple[str, str]], set[str]]:
    """(the configs kept, their stages as (dataset, "<stage>-<key>"), every pipeline stage name).

    Each config is planned as given and with smoke=true (the two ways it is run); stages are
    matched by name and key, not by path, since the key does not depend on the cache folder."""
    keep = list(getattr(args, "keep", None) or _repo_configs()) + ([args.config] if getattr(args, "config", None) else [])
    referenced: set[tuple[str, str]] = set()
    # names: from the default config too, whose plan has every variant (ablations, unclustered CAE)
    names = {s.name for s in plan(ExperimentConfig().effective())}
    for source in keep:
        for extra in ([], ["smoke=true"]):
            cfg = resolve_config(str(source), overrides(args) + extra, getattr(args, "profile", None)).effective()
            for stage in plan(cfg):
                referenced.add((cfg.data.dataset, stage.path.name))
                names.add(stage.name)
    return [str(k) for k in keep], referenced, names


def _repo_configs() -> list[Path]:
    """The experiment configs beside the suite (configs/*.yaml; boards inventories left out)."""
    found = []
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        try:
            tree = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            tree = None  # loading it below names the problem
        if not (isinstance(tree, dict) and "boards" in tree):
            found.append(path)
    if not found:
        raise ConfigError(f"no experiment configs in {REPO_ROOT / 'configs'} to keep; name the configs whose stages stay "
                          "with --keep CONFIG")
    return found


def clean(root: Path, referenced: set[tuple[str, str]], pipeline: set[str], older_than_days: float | None,
          dry_run: bool) -> Outcome:
    """Remove (or, ``dry_run``, list) what is stale under ``root``; see the command's help."""
    out = Outcome()
    for dataset in _datasets(root):
        groups: dict[str, set[str]] = defaultdict(set)  # "<stage>-<key>" -> suffixes present
        for entry in dataset.iterdir():
            match = STAGE_ENTRY.match(entry.name)
            if match:
                groups[entry.name[: match.end("key")]].add(match["suffix"] or "")
        for base, suffixes in sorted(groups.items()):
            _clean_stage(dataset, base, suffixes, (dataset.name, base) in referenced, pipeline, older_than_days, dry_run, out)
    return out


def _clean_stage(dataset: Path, base: str, suffixes: set[str], referenced: bool, pipeline: set[str],
                 older_than_days: float | None, dry_run: bool, out: Outcome) -> None:
    """One stage key: its finished folder, its partial folder and its lock, decided together under its lock."""
    stage = STAGE_ENTRY.match(base)["stage"]
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    candidates = []
    for suffix in ("", PARTIAL):
        path = dataset / (base + suffix)
        if suffix not in suffixes or not path.is_dir() or path.is_symlink():
            continue
        if not suffix and not (path / SUCCESS).exists():
            out.kept["stage folders without _SUCCESS"] += 1  # not left so by a stage runner: not ours to judge
        elif referenced:
            out.kept["referenced"] += 1
        elif stage not in pipeline and cutoff is None:
            out.kept["not pipeline stages (need --older-than)"] += 1
        elif cutoff is not None and (newest_mtime(path) if suffix else (path / SUCCESS).stat().st_mtime) > cutoff:
            out.kept["newer than --older-than"] += 1
        else:
            why = "unreferenced" if stage in pipeline else "not a pipeline stage"
            why += ", stale work in progress" if suffix else ""
            candidates.append((path, why + ("" if cutoff is None else f", older than {older_than_days:g} days")))
    lock = dataset / (base + LOCK)
    if not candidates and LOCK not in suffixes:
        return
    with try_lock(lock, create=not dry_run) as held:
        if not held:
            out.in_use += [f"{dataset.name}/{p.name}" for p, _ in candidates] or [f"{dataset.name}/{lock.name}"]
            return
        for path, why in candidates:
            if not path.is_dir():  # finished (partial renamed into place) or removed since it was looked at
                continue
            out.removed.append((f"{dataset.name}/{path.name}", tree_bytes(path), why))
            if not dry_run:
                (path / SUCCESS).unlink(missing_ok=True)  # first: a half-removed folder must not look finished
                shutil.rmtree(path)
        if LOCK in suffixes and not _opened_elsewhere(lock):  # someone who opened it waits for it: leave it
            out.removed.append((f"{dataset.name}/{lock.name}", 0, STALE_LOCK))
            if not dry_run:
                lock.unlink(missing_ok=True)
        elif not dry_run and LOCK not in suffixes and not _opened_elsewhere(lock):
            lock.unlink(missing_ok=True)  # the one this clean created


def _opened_elsewhere(path: Path) -> bool:
    """Whether another process of this machine has ``path`` open (waiting for its lock, say), read
    off /proc: a lock file removed under a waiting process would give the next run a second lock."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
    except OSError:  # no /proc: nothing to tell
        return False
    for pid in pids:
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.stat(fd.path)
                except OSError:
                    continue
                if (target.st_dev, target.st_ino) == (st.st_dev, st.st_ino):
                    return True
    return False
