"""``caenet runs``: the recent ``caenet run`` pipelines of the MLflow store, newest first, with
their headline numbers and run ids (which ``caenet export``, ``edge bench`` and ``report``
take in place of a config), without starting the MLflow UI."""

from __future__ import annotations

import time
from pathlib import Path

from suite.commands.arguments import positive_int
from suite.config import ConfigError, RuntimeConfig
from suite import tracking_store

ORDER = 62
HELP = "list recent `caenet run` pipelines from MLflow: accuracy, speed-up, status and run ids"

# metric -> (column, format): the headline numbers `caenet run` logs on its parent run
COLUMNS = {"caenet.test_acc": ("CAE-Net acc", "pct"), "baseline.test_acc": ("baseline acc", "pct"),
           "speedup_p50": ("speed-up p50", "times")}


def add_parser(sub) -> None:
    runs = sub.add_parser("runs", help=HELP,
                          description="The pipeline runs of `caenet run` (parent runs tagged kind=run; stage runs, "
                          "compare, sweep, export, edge and report runs left out), newest first: start time, config name, "
                          "status, dataset, smoke, CAE-Net and baseline test accuracy, batch-1 p50 speed-up and the run id; "
                          "`-` where a run logged no such number (it FAILED or was KILLED first). Then how to open them "
                          "in the MLflow UI. Example: caenet runs -n 5")
    runs.add_argument("--tracking-uri", metavar="URI",
                      help="MLflow store, as runtime.tracking_uri (default: $MLFLOW_TRACKING_URI, else ./mlruns as `caenet run`)")
    runs.add_argument("--experiment", default=RuntimeConfig().experiment,
                      help=f"MLflow experiment (runtime.experiment; default: {RuntimeConfig().experiment})")
    runs.add_argument("-n", "--limit", type=positive_int, default=20, metavar="N", help="at most N runs (default: 20)")
    runs.set_defaults(func=main)


def main(args) -> int:
    uri = store_uri(args.tracking_uri)
    # a SQLite file that is not there: no store (opening it would create one)
    missing = uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()
    runs, experiment_id = ([], None) if missing else pipeline_runs(uri, args.experiment, args.limit)
    if not runs:
        # Exit 0: an empty store is the normal state of a fresh checkout, not a mistake; the line
        # names the store, so a mistyped --tracking-uri shows.
        print(f"no runs yet in {uri} (experiment {args.experiment!r}); run `caenet run CONFIG` first")
        return 0
    rows = [("started", "name", "status", "dataset", "smoke", *(c for c, _ in COLUMNS.values()), "run id")]
    for run in runs:
        metrics, tags = run.data.metrics, run.data.tags
        rows.append((time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000)), run.info.run_name or "-",
                     run.info.status, tags.get("dataset", "-"), tags.get("smoke", "-"),
                     *(_number(metrics.get(m), kind) for m, (_, kind) in COLUMNS.items()), run.info.run_id))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = range(5, 5 + len(COLUMNS))
    for row in rows:
        print("  ".join(c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    page = f"#/experiments/{experiment_id}/runs/{runs[0].info.run_id}"
    if uri.startswith(("http://", "https://")):
        print(f"\nopen them at {uri.rstrip('/')}/{page} (the newest)")
    else:
        print(f"\nopen them: mlflow ui --backend-store-uri {uri}  then http://127.0.0.1:5000/{page} (the newest)")
    return 0


def store_uri(tracking_uri: str | None) -> str:
    """The store's URI as ``caenet run`` resolves it, with nothing made on disk (resolving the
    default creates ./mlruns, which a listing should not)."""
    return tracking_store.resolve_uri(tracking_uri, create=False)[0]


def pipeline_runs(uri: str, experiment: str, limit: int) -> tuple[list, str | None]:
    """(the newest ``limit`` parent runs tagged kind=run, newest first; the experiment's id)."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow takes ~1 s to import

    client = tracking_store.client(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return [], None
        found, token = [], None
        while len(found) < limit:  # children may carry kind=run too: filter them out, page on
            page = client.search_runs([exp.experiment_id], "tags.kind = 'run'", max_results=max(limit, 100),
                                      order_by=["attributes.start_time DESC"], page_token=token)
            found += [r for r in page if "mlflow.parentRunId" not in r.data.tags]
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise ConfigError(f"--tracking-uri {uri}: cannot read runs ({str(exc).splitlines()[0][:160]})") from None
    return found[:limit], exp.experiment_id


def _number(value: float | None, kind: str) -> str:
    if value is None or value != value:  # missing or NaN
        return "-"
    return f"{100 * value:.2f}%" if kind == "pct" else f"{value:.2f} x"
