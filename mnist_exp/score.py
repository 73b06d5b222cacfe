"""`python -m mnist_exp.score MODEL SET...`: a registered or logged model scored on more sets
(`folder:DIR`, `idx:DIR`, `mnist`, `robustness`), each set's metrics and reports logged to the
model's run as `evaluate.extra` logs them (the run's dataset inputs stay those it trained with)."""

import argparse

from mnist_exp.config.schema import EvaluateConfig, MlflowConfig, extra_name
from mnist_exp.errors import MnistExpError, exit_with


def score_model(uri: str, specs: list[str], settings: MlflowConfig) -> tuple[str, dict]:
    """Score the model `uri` names on each set; log each set's metrics, confusion matrix and
    report to its run under `extra/<name>/`. The run's id and {name: SplitReport}."""
    EvaluateConfig(extra=specs)  # the same checks as evaluate.extra, in one line each
    from mnist_exp.console import import_tensorflow

    import_tensorflow()
    from mnist_exp.evaluate import evaluate_split
    from mnist_exp.groups.dataset import scoring_sets
    from mnist_exp.names import extra_metrics
    from mnist_exp.tracking import log, read
    from mnist_exp.tracking.store import open_store

    store = open_store(settings)
    run = read.model_run(uri, store)
    if run is None:
        raise MnistExpError(
            f"{uri} is no logged model in {store.uri}: give a registered model "
            "(models:/mnist-cnn@champion) or a run's (runs:/<run id>/model)."
        )
    classes = tuple(read.run_classes(run.info.run_id, store))
    sets = scoring_sets(specs, classes)
    model = read.load_logged_model(uri, store)
    reports = {
        name: evaluate_split(model, s.images, s.labels, classes, s.parts)
        for name, s in sets.items()
    }
    for name, report in reports.items():
        log.log_split(report, f"extra/{name}", extra_metrics(name), classes, store, run.info.run_id)
    return run.info.run_id, reports


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(prog="python -m mnist_exp.score", description=__doc__)
    found.add_argument("model", help="models:/mnist-cnn@champion, runs:/<run id>/model, ...")
    found.add_argument(
        "sets", nargs="+", metavar="SET", help="folder:DIR, idx:DIR, mnist or robustness"
    )
    return found


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run_id, reports = score_model(args.model, args.sets, MlflowConfig())
    except MnistExpError as error:
        exit_with(error)
    for spec in args.sets:
        report = reports[extra_name(spec)]
        print(
            f"{extra_name(spec)}: accuracy {report.accuracy:.4f} on {len(report.labels):,} images, "
            f"logged to run {run_id} under extra/{extra_name(spec)}/"
        )


if __name__ == "__main__":
    main()
