"""A sweep's summary: the job table, one row per configuration where seeds or folds repeat it, the
figure, and the best configuration's paired test against the runner-up."""

import csv
import io
import sys
from typing import Any

from mnist_exp.errors import MnistExpError
from mnist_exp.names import FINISHED
from mnist_exp.tracking.notes import command, job_counts, sweep_note

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


def summarise(run_id: str, rows: list[dict[str, Any]], dataset: dict[str, Any]) -> None:
    """Log the job table, and where seeds or folds repeat a configuration the table by
    configuration, the figure, the best configuration (on mean validation accuracy) and its
    paired test against the runner-up to the parent run; print the tables and the verdict."""
    from mlflow import MlflowClient

    from mnist_exp.figures import config_figure, sweep_figure
    from mnist_exp.tracking.read import metric_series

    client = MlflowClient()
    labelled, shared = label_rows(rows)
    table = markdown_table(labelled)
    client.log_text(run_id, f"Shared overrides: {shared or '(none)'}\n\n{table}", "summary.md")
    client.log_text(run_id, csv_table(rows, (*COLUMNS, "run_id", "reused", "error")), "summary.csv")
    finished = [row for row in rows if row["status"] == FINISHED]
    _, pruned, unfinished = job_counts(rows)
    client.log_metric(run_id, "jobs_finished", len(finished))
    client.log_metric(run_id, "jobs_failed", unfinished)
    if pruned:
        client.log_metric(run_id, "jobs_pruned", pruned)
    print(
        f"\nSweep summary: {len(finished)} of {len(rows)} jobs finished"
        f"{f', {pruned} pruned' if pruned else ''} "
        f"(shared overrides: {shared or 'none'})\n{table}"
    )
    grouped = group_rows(rows)
    labelled_groups = label_rows(grouped)[0] if len(grouped) > 1 else grouped  # one: say it whole
    repeated = len(grouped) < len(rows)
    if repeated:
        by_config = grouped_markdown(labelled_groups)
        client.log_text(run_id, f"Shared overrides: {shared or '(none)'}\n\n{by_config}",
                        f"{BY_CONFIG}.md")  # fmt: skip
        client.log_text(run_id, csv_table(grouped, CONFIG_COLUMNS), f"{BY_CONFIG}.csv")
        print(f"By configuration (seeds and folds are repetitions; 95% t intervals):\n{by_config}")
        figure = config_figure(labelled_groups)
    else:
        curves = {
            row["overrides"]: metric_series(client, row["run_id"], "val_accuracy")
            for row in labelled
            if row.get("run_id")
        }
        figure = sweep_figure(labelled, curves)
    client.log_figure(run_id, figure, "summary.png")
    ranked = sorted(
        (row for row in grouped if row["n"]), key=lambda row: row["val_mean"], reverse=True
    )
    paired = pair_best(run_id, ranked, dataset)
    overrides = client.get_run(run_id).data.tags.get("overrides", "").split()
    best = ranked[0] if ranked else None
    client.set_tag(run_id, "mlflow.note.content", sweep_note(overrides, rows, best, paired))
    if best is None:
        return
    best_run = next(row for row in finished if row["run_id"] == best["best_run_id"])
    client.log_metric(run_id, "best_job_val_accuracy", best_run["val_accuracy"])
    client.log_metric(run_id, "best_job_test_accuracy", best_run["test_accuracy"])
    if repeated:
        client.log_metric(run_id, "best_config_val_mean", best["val_mean"])
        client.log_metric(run_id, "best_config_test_mean", best["test_mean"])
        client.log_metric(run_id, "best_config_n", best["n"])
    client.set_tag(run_id, "best_run_id", best["best_run_id"])
    for override in labelled_groups[grouped.index(best)]["overrides"].split():
        key, assigns, value = override.partition("=")
        if assigns:  # not "(shared only)": one configuration, nothing to tell it apart
            client.log_param(run_id, f"best.{key.lstrip('+~')}", value)
    over = f" over {best['n']} runs, test {best['test_mean']:.4f}" if repeated else ""
    print(
        f"Best configuration on validation: val {best['val_mean']:.4f}{over}; its best run "
        f"{best['best_run_id']}: val {best_run['val_accuracy']:.4f}, test "
        f"{best_run['test_accuracy']:.4f}. To run it alone:\n  "
        f"{command(best['overrides'].split())}"
    )
    if paired:
        print(f"Best against the runner-up, on the test set (best runs of each):\n{paired}")


def pair_best(run_id: str, ranked: list[dict[str, Any]], dataset: dict[str, Any]) -> str | None:
    """McNemar's test between the best-validation runs of the two best configurations, logged to
    the parent (`comparison.txt`, `comparison.png`, metric `mcnemar_p_value`); its verdict."""
    import mlflow

    from mnist_exp.figures import flipped_figure
    from mnist_exp.sweeps.compare import compare, test_images, verdict

    if len(ranked) < 2:
        return None
    try:
        comparison = compare(ranked[0]["best_run_id"], ranked[1]["best_run_id"],
                             mlflow.get_tracking_uri())  # fmt: skip
        figure = flipped_figure(
            test_images(dataset), comparison.labels, comparison.predicted, comparison.p_value
        )
    except MnistExpError as error:
        print(f"No paired test of the two best configurations: {error}", file=sys.stderr)
        return None
    client = mlflow.MlflowClient()
    text = verdict(comparison)
    client.log_text(run_id, text, "comparison.txt")
    client.log_figure(run_id, figure, "comparison.png")
    client.log_metric(run_id, "mcnemar_p_value", comparison.p_value)
    return text
