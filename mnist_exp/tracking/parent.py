"""A sweep's parent run: opened before its jobs start, given the sweep's summary and its search's
results, and ended with the sweep. Written through the store's client, never as the process's
active run, which each job of an in-process launcher opens for itself."""

from typing import TYPE_CHECKING

from mnist_exp.tracking.store import Store

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def open_parent(store: Store, name: str, tags: dict[str, str]) -> str:
    """A new RUNNING run named `name` in the store's experiment (made by `use_store`); its id."""
    return store.client.create_run(store.experiment_id(), run_name=name, tags=tags).info.run_id


def log_to_parent(
    store: Store,
    run_id: str,
    *,
    texts: dict[str, str] | None = None,
    figures: dict[str, "Figure"] | None = None,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Log to the run `run_id` texts and figures (by artifact path), metrics, params and tags."""
    client = store.client
    for path, text in (texts or {}).items():
        client.log_text(run_id, text, path)
    for path, figure in (figures or {}).items():
        client.log_figure(run_id, figure, path)
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, value)
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)


def parent_tags(store: Store, run_id: str) -> dict[str, str]:
    """The parent run's tags (the sweep's overrides among them)."""
    return store.client.get_run(run_id).data.tags


def end_parent(store: Store, run_id: str, status: str) -> None:
    """End the parent run with the sweep's status (FINISHED, or KILLED when it was cut short)."""
    store.client.set_terminated(run_id, status)
