"""One experiment: compose the config, load MNIST, build, train, evaluate and log to MLflow."""

import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_exp import sweep
from mnist_exp.config import check_overrides, register_configs, validate
from mnist_exp.errors import MnistExpError, exit_with

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
register_configs()
jobs_started = 0  # Hydra exits with 1 on its own config errors, before any job starts


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train one configuration; return its best validation accuracy for sweepers.
    In a sweep a failed job is recorded as such and returns None, and the sweep goes on."""
    global jobs_started
    jobs_started += 1
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return experiment(cfg, output_dir)
    except KeyboardInterrupt:
        sweep.record_job(output_dir, "KILLED")
        raise SystemExit(130) from None
    except Exception as error:
        sweep.record_job(output_dir, "FAILED", error=f"{type(error).__name__}: {error}")
        if sweep.parent_run_id() is None:  # a single run
            if isinstance(error, MnistExpError):
                exit_with(error)
            raise
        if isinstance(error, MnistExpError):
            print(f"error in job {HydraConfig.get().job.num}: {error}", file=sys.stderr)
        else:
            traceback.print_exc()  # a bug, not a user error: show where, then go on
        return None


def experiment(cfg: DictConfig, output_dir: Path) -> float:
    """The story of one run; returns its best validation accuracy."""
    config = validate(cfg)
    # Heavy imports only now, so `--help` and `--cfg job` answer at once.
    from mnist_exp import tracking
    from mnist_exp.data import load_mnist
    from mnist_exp.evaluate import evaluate
    from mnist_exp.model import build_model
    from mnist_exp.train import best_epoch, seed_everything, set_precision, train

    # Ctrl-C and SIGTERM stop cleanly, even where a parent shell ignored SIGINT (nohup, `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tracking.use_store(config.mlflow)  # an unreachable store fails now, not after training
    if config.skip_finished and (twin := tracking.finished_twin(cfg)):
        print(f"Skipped: this exact config already finished as run {twin.info.run_id}.")
        sweep.record_finished(output_dir, twin.info.run_id, reused=True)
        return twin.data.metrics["best_val_accuracy"]
    work_dir = tracking.resume_dir(config.resume) if config.resume else output_dir
    seed_everything(config.seed, config.deterministic)  # also clears what earlier jobs left
    precision = set_precision(config.precision)  # before the model is built
    data = load_mnist(config.dataset)
    parent = sweep.parent_run_id()
    with tracking.start_run(
        cfg, work_dir, config.resume, parent, {"precision_used": precision}
    ) as run:
        model = build_model(config.model)
        history = train(
            model, data, config, work_dir, [tracking.MlflowMetrics()], bool(config.resume)
        )
        report = evaluate(model, data)
        best = best_epoch(history, config.callbacks.checkpoint)
        tracking.log_evaluation(history, best, report, data.x_test)
        tracking.log_model(model, output_dir, report.val.accuracy, config.mlflow)
    sweep.record_finished(output_dir, run.info.run_id)
    print(
        f"\nval accuracy {report.val.accuracy:.4f} | test accuracy {report.test.accuracy:.4f} | "
        f"{len(history['loss'])} epochs (best {best + 1}) | run {run.info.run_id}\n"
        f"Browse runs: mlflow ui --backend-store-uri {tracking.tracking_uri(config.mlflow)}"
    )
    return report.val.accuracy


def cli() -> None:
    """Like `main`, but Hydra's config errors (unknown key or option, wrong type) are one line
    and exit with 2, like the schema's."""
    arguments = sys.argv[1:]
    if not any(a.startswith("-") for a in arguments):  # --cfg, --help, -m: Hydra's own business
        try:
            check_overrides(str(CONF_DIR), arguments)
        except MnistExpError as error:
            exit_with(error)
    try:
        main()
    except SystemExit as exit_:
        raise SystemExit(2 if exit_.code == 1 and jobs_started == 0 else exit_.code) from None
    if sweep.failed_jobs:
        raise SystemExit(1)  # the sweep ran to its end, but not every job finished


if __name__ == "__main__":
    cli()
