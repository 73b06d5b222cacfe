"""What a person reads in the MLflow UI: a run's description, a sweep's, a model version's."""

import json
import platform
from collections.abc import Sequence
from functools import cache
from typing import Any

from mnist_exp.machine import description
from mnist_exp.names import (
    BEST_EPOCH,
    BEST_VAL_ACCURACY,
    CLASS_BALANCE,
    EPOCHS_RUN,
    FINISHED,
    PRUNED,
    RUN_COMMAND,
    TEST_ACCURACY,
    TRAIN_SECONDS,
)


def command(overrides: Sequence[str], multirun: bool = False, resume: str | None = None) -> str:
    """The command line that runs these overrides again (or, given a run id, resumes it)."""
    kept = [o for o in overrides if not o.startswith("resume=")]
    again = [*(["-m"] if multirun else []), *kept, *([f"resume={resume}"] if resume else [])]
    return " ".join([RUN_COMMAND, *again])


def job_counts(rows: list[dict]) -> tuple[int, int, int]:
    """A sweep's jobs that finished, that a pruner stopped, and that did neither."""
    finished = sum(row["status"] == FINISHED for row in rows)
    pruned = sum(row["status"] == PRUNED for row in rows)
    return finished, pruned, len(rows) - finished - pruned


@cache
def machine() -> str:
    """Host, CPU, cores and the TensorFlow/Keras versions: what a run's speed depends on."""
    about = description()
    limit = f"; oneDNN capped at {about['isa_limit']}" if about["isa_limit"] else ""
    return (
        f"{platform.node()}: {about['cpu']}, {about['cores']} cores; "
        f"TensorFlow {about['tensorflow']}, Keras {about['keras']}{limit}"
    )


def datasets(run: Any) -> dict[str, tuple[str, str, int]]:
    """{context: (name, digest, images)} of a run's dataset inputs; an extra set's context is
    `extra <name>`."""
    found = {}
    for item in run.inputs.dataset_inputs:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        rows = json.loads(item.dataset.profile or "{}").get("features_shape", [0])[0]
        context = f"extra {item.dataset.name}" if context == "extra" else context
        found[context] = (item.dataset.name, item.dataset.digest, rows)
    return found


def split(run: Any) -> str:
    """Which training images validated: the split option, its knobs and the digest of its picks."""
    params = run.data.params
    if "split_digest" not in params:
        return ""
    knobs = ", ".join(
        f"{key.removeprefix('split.')} {value}"
        for key, value in sorted(params.items())
        if key.startswith("split.") and key != "split._target_"
    )
    return (
        f"{run.data.tags.get('choice.split', params.get('split._target_'))} ({knobs}), "
        f"validation images digest `{params['split_digest']}`"
    )


def run_note(run: Any, overrides: Sequence[str], ending: str | None = None) -> str:
    """A run's description: what ran, how it did, how to repeat it, on what data and machine."""
    metrics, params = run.data.metrics, run.data.params
    if TEST_ACCURACY in metrics:
        outcome = (
            f"Validation accuracy **{metrics[BEST_VAL_ACCURACY]:.2%}**, test accuracy "
            f"**{metrics[TEST_ACCURACY]:.2%}**: the checkpoint of epoch "
            f"{metrics[BEST_EPOCH]:.0f} of {metrics[EPOCHS_RUN]:.0f}, chosen on validation."
        )
    else:
        outcome = ending or "Training; the figures appear here when the run finishes."
    data = ", ".join(
        f"{context} {rows:,} images (`{name}`, digest `{digest}`)"
        for context, (name, digest, rows) in datasets(run).items()
    )
    table = {
        "architecture": f"`{params.get('model._target_')}`, "
        f"{int(params.get('model_params', 0)):,} parameters",
        "optimizer": f"`{params.get('optimizer._target_')}`, learning rate "
        f"{params.get('optimizer.learning_rate', '?')}, batch {params.get('batch_size')}",
        "starts from": "" if params.get("init_from", "None") == "None" else params["init_from"],
        "split": split(run),
        "recipe": ", ".join(
            f"{group} {run.data.tags[f'choice.{group}']}"
            for group in ("schedule", "callbacks", "augment")
            if f"choice.{group}" in run.data.tags
        ),
        "precision": params.get("precision_used", "?"),
        "training time": f"{metrics[TRAIN_SECONDS] / 60:.1f} min"
        if TRAIN_SECONDS in metrics
        else "",
        "data": data,
        "classes": run.data.tags.get(CLASS_BALANCE, ""),
        "machine": machine(),
    }
    rows = "\n".join(f"| {key} | {value} |" for key, value in table.items() if value)
    return (
        f"**{run.info.run_name}**\n\n{outcome}\n\nRun it again:\n\n"
        f"```\n{command(overrides)}\n```\n\n| | |\n| --- | --- |\n{rows}\n"
    )


def version_note(run: Any) -> str:
    """A registered model version's description: which run, data and accuracy it came from."""
    metrics = run.data.metrics
    name, digest, rows = datasets(run).get("training", ("?", "?", 0))
    return (
        f"From run {run.info.run_id} ({run.info.run_name}): validation accuracy "
        f"{metrics[BEST_VAL_ACCURACY]:.2%}, test accuracy {metrics[TEST_ACCURACY]:.2%}. "
        f"Trained on {name} (digest {digest}, {rows:,} images)."
    )


def sweep_note(
    overrides: Sequence[str], rows: list[dict], best: dict | None, paired: str | None
) -> str:
    """A sweep's description: the command, how many jobs finished, the best configuration (on
    mean validation accuracy, `best` being its row by configuration) and its paired test."""
    finished, pruned, unfinished = job_counts(rows)
    stopped = f"{pruned} pruned, " if pruned else ""
    text = (
        f"Sweep of {len(rows)} jobs: {finished} finished, {stopped}{unfinished} did not.\n\n"
        f"```\n{command(overrides, multirun=True)}\n```\n"
    )
    if best is not None:
        runs = f"mean of {best['n']} runs, " if best["n"] > 1 else ""
        text += (
            f"\nBest on validation: **{best['val_mean']:.2%}** ({runs}test {best['test_mean']:.2%}"
            f"; best run {best['best_run_id']}), `{best['overrides']}`. Run it alone:\n\n"
            f"```\n{command(best['overrides'].split())}\n```\n"
        )
    if paired is not None:
        text += f"\nAgainst the runner-up, on the test set:\n\n```\n{paired}```\n"
    return text
