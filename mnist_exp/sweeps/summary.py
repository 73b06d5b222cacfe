"""A sweep's summary: the job table, one row per configuration where seeds or folds repeat it, the
figure, and the best configuration's paired test against the runner-up."""

import csv
import io
import sys
from typing import TYPE_CHECKING, Any

from mnist_exp.errors import MnistExpError
from mnist_exp.names import FINISHED
from mnist_exp.tracking.notes import command, job_counts, sweep_note

if TYPE_CHECKING:
    from mnist_exp.tracking.store import Store

BY_CONFIG = "summary_by_config"  # the parent's .csv and .md: one row per configuration
COLUMNS = (
    *("job", "overrides", "status", "val_accuracy", "test_accuracy"),
    *("epochs", "seconds", "wall_seconds"),  # training; the job's start to the end of its logging
)
REPEATS = ("seed", "split.fold")  # overrides that repeat a configuration rather than change it
STATISTICS = ("mean", "std", "min", "max", "ci_low", "ci_high")  # ci: the 95% t interval
CONFIG_COLUMNS = (
    "overrides",
    "n",
    "failed",
    *(f"{split}_{stat}" for split in ("val", "test") for stat in STATISTICS),
    "epochs_mean",
    "seconds_mean",
    "wall_seconds_mean",
    "best_run_id",
)


def label_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Rows whose `overrides` keep only what differs between jobs, and the overrides they share."""
    lists = [row["overrides"].split() for row in rows]
    shared = [o for o in lists[0] if all(o in other for other in lists)] if lists else []
    labelled = [
        {**row, "overrides": " ".join(o for o in overrides if o not in shared) or "(shared only)"}
        for row, overrides in zip(rows, lists, strict=True)
    ]
    return labelled, " ".join(shared)


def configuration(overrides: str) -> str:
    """A job's overrides without its repeats (seed, fold): what makes it a configuration."""
    return " ".join(o for o in overrides.split() if o.lstrip("+~").partition("=")[0] not in REPEATS)


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration, in job order: n finished jobs (failed ones counted apart), the
    spread of their validation and test accuracy, mean epochs, training and wall seconds, the best
    run on val."""
    from mnist_exp.sweeps.stats import spread

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(configuration(row["overrides"]), []).append(row)
    grouped = []
    for overrides, jobs in groups.items():
        done = [job for job in jobs if job["status"] == FINISHED]
        row = {"overrides": overrides, "n": len(done), "failed": len(jobs) - len(done)}
        for split in ("val", "test"):
            values = spread([job[f"{split}_accuracy"] for job in done])
            numbers = (values.mean, values.std, values.min, values.max, values.low, values.high)
            row.update({f"{split}_{stat}": v for stat, v in zip(STATISTICS, numbers, strict=True)})
        row["epochs_mean"] = spread([job["epochs"] for job in done]).mean
        row["seconds_mean"] = spread([job["seconds"] for job in done]).mean
        walls = [job["wall_seconds"] for job in done if job.get("wall_seconds") is not None]
        row["wall_seconds_mean"] = spread(walls).mean
        best = max(done, key=lambda job: job["val_accuracy"], default=None)
        row["best_run_id"] = best["run_id"] if best else None
        grouped.append(row)
    return grouped


def cell(key: str, value: Any) -> str:
    if value is None or value != value:  # None or NaN: nothing to say
        return ""
    if key.startswith(("seconds", "wall_seconds", "epochs")):
        return f"{value:.1f}"
    return f"{value:.4f}" if key.startswith(("val", "test")) else str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def grouped_markdown(grouped: list[dict[str, Any]]) -> str:
    """Per configuration: n, and validation and test accuracy as mean, 95% interval, std, range."""

    def interval(row: dict[str, Any], split: str) -> str:
        low, high = row[f"{split}_ci_low"], row[f"{split}_ci_high"]
        return "" if low != low else f"{low:.4f} to {high:.4f}"

    def values(row: dict[str, Any], split: str) -> list[str]:
        mean, std = cell("val", row[f"{split}_mean"]), cell("val", row[f"{split}_std"])
        span = f"{row[f'{split}_min']:.4f} to {row[f'{split}_max']:.4f}" if row["n"] else ""
        return [mean, interval(row, split), std, span]

    statistics = ("mean", "95% CI", "std", "min to max")
    head = ["configuration", "n", *(f"{s} {x}" for s in ("val", "test") for x in statistics)]
    head += ["epochs", "seconds", "wall seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in grouped:
        n = f"{row['n']}" + (f" (+{row['failed']} failed)" if row["failed"] else "")
        cells = [row["overrides"], n, *values(row, "val"), *values(row, "test")]
        cells += [cell("epochs", row["epochs_mean"]), cell("seconds", row["seconds_mean"])]
        cells.append(cell("wall_seconds", row["wall_seconds_mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summarise(store: "Store", run_id: str, rows: list[dict[str, Any]], dataset: dict) -> None:
    """Log the job table, and where seeds or folds repeat a configuration the table by
    configuration, the figure, the best configuration (on mean validation accuracy) and its
    paired test against the runner-up to the parent run; print the tables and the verdict."""
    from mnist_exp.figures import config_figure, sweep_figure
    from mnist_exp.tracking.parent import log_to_parent, parent_tags
    from mnist_exp.tracking.read import metric_series

    labelled, shared = label_rows(rows)
    texts, metrics = job_table(rows, labelled, shared)
    grouped = group_rows(rows)
    labelled_groups = label_rows(grouped)[0] if len(grouped) > 1 else grouped  # one: say it whole
    repeated = len(grouped) < len(rows)
    if repeated:
        texts |= config_table(grouped, labelled_groups, shared)
        figure = config_figure(labelled_groups)
    else:
        curves = {
            row["overrides"]: metric_series(store, row["run_id"], "val_accuracy")
            for row in labelled
            if row.get("run_id")
        }
        figure = sweep_figure(labelled, curves)
    log_to_parent(store, run_id, texts=texts, figures={"summary.png": figure}, metrics=metrics)
    ranked = sorted(
        (row for row in grouped if row["n"]), key=lambda row: row["val_mean"], reverse=True
    )
    paired = pair_best(store, run_id, ranked, dataset)
    overrides = parent_tags(store, run_id).get("overrides", "").split()
    best = ranked[0] if ranked else None
    note = sweep_note(overrides, rows, best, paired)
    log_to_parent(store, run_id, tags={"mlflow.note.content": note})
    if best is not None:
        chosen = labelled_groups[grouped.index(best)]["overrides"]
        log_best(
            store, run_id, best, chosen, [r for r in rows if r["status"] == FINISHED], repeated
        )
    if paired:
        print(f"Best against the runner-up, on the test set (best runs of each):\n{paired}")


def job_table(
    rows: list[dict[str, Any]], labelled: list[dict[str, Any]], shared: str
) -> tuple[dict[str, str], dict[str, float]]:
    """The table of jobs, printed; as the parent logs it, and how many jobs finished, failed and
    were pruned."""
    table = markdown_table(labelled)
    texts = {
        "summary.md": f"Shared overrides: {shared or '(none)'}\n\n{table}",
        "summary.csv": csv_table(rows, (*COLUMNS, "run_id", "reused", "error")),
    }
    finished, pruned, unfinished = job_counts(rows)
    metrics = {"jobs_finished": finished, "jobs_failed": unfinished}
    if pruned:
        metrics["jobs_pruned"] = pruned
    print(
        f"\nSweep summary: {finished} of {len(rows)} jobs finished"
        f"{f', {pruned} pruned' if pruned else ''} "
        f"(shared overrides: {shared or 'none'})\n{table}"
    )
    return texts, metrics


def config_table(
    grouped: list[dict[str, Any]], labelled: list[dict[str, Any]], shared: str
) -> dict[str, str]:
    """The table by configuration, printed; as the parent logs it."""
    by_config = grouped_markdown(labelled)
    print(f"By configuration (seeds and folds are repetitions; 95% t intervals):\n{by_config}")
    return {
        f"{BY_CONFIG}.md": f"Shared overrides: {shared or '(none)'}\n\n{by_config}",
        f"{BY_CONFIG}.csv": csv_table(grouped, CONFIG_COLUMNS),
    }


def log_best(
    store: "Store",
    run_id: str,
    best: dict[str, Any],
    overrides: str,
    finished: list[dict[str, Any]],
    repeated: bool,
) -> None:
    """The best configuration (its row by configuration; `overrides`: what sets it apart) and its
    best run, logged to the parent and printed with the command that runs it alone."""
    from mnist_exp.tracking.parent import log_to_parent

    best_run = next(row for row in finished if row["run_id"] == best["best_run_id"])
    metrics = {
        "best_job_val_accuracy": best_run["val_accuracy"],
        "best_job_test_accuracy": best_run["test_accuracy"],
    }
    if repeated:
        metrics |= {"best_config_val_mean": best["val_mean"], "best_config_n": best["n"]}
        metrics["best_config_test_mean"] = best["test_mean"]
    params = {}
    for override in overrides.split():
        key, assigns, value = override.partition("=")
        if assigns:  # not "(shared only)": one configuration, nothing to tell it apart
            params[f"best.{key.lstrip('+~')}"] = value
    tags = {"best_run_id": best["best_run_id"]}
    log_to_parent(store, run_id, metrics=metrics, params=params, tags=tags)
    over = f" over {best['n']} runs, test {best['test_mean']:.4f}" if repeated else ""
    print(
        f"Best configuration on validation: val {best['val_mean']:.4f}{over}; its best run "
        f"{best['best_run_id']}: val {best_run['val_accuracy']:.4f}, test "
        f"{best_run['test_accuracy']:.4f}. To run it alone:\n  "
        f"{command(best['overrides'].split())}"
    )


def pair_best(
    store: "Store", run_id: str, ranked: list[dict[str, Any]], dataset: dict[str, Any]
) -> str | None:
    """McNemar's test between the best-validation runs of the two best configurations, logged to
    the parent (`comparison.txt`, `comparison.png`, metric `mcnemar_p_value`); its verdict."""
    from mnist_exp.compare import compare, test_images, verdict
    from mnist_exp.figures import flipped_figure
    from mnist_exp.tracking.parent import log_to_parent

    if len(ranked) < 2:
        return None
    try:
        comparison = compare(ranked[0]["best_run_id"], ranked[1]["best_run_id"], store)
        figure = flipped_figure(
            test_images(dataset), comparison.labels, comparison.predicted, comparison.p_value
        )
    except MnistExpError as error:
        print(f"No paired test of the two best configurations: {error}", file=sys.stderr)
        return None
    text = verdict(comparison)
    log_to_parent(
        store,
        run_id,
        texts={"comparison.txt": text},
        figures={"comparison.png": figure},
        metrics={"mcnemar_p_value": comparison.p_value},
    )
    return text
