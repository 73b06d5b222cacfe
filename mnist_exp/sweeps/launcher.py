"""`hydra/launcher=slurm`: submitit's SLURM launcher, where a job that ends without a result
(`scancel`, its node lost, killed outright) is a job of the sweep that did not finish rather
than the end of the sweep, and the jobs that did finish are summarised as always."""

from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """Submits a batch of jobs as one SLURM array, as submitit's launcher does, and waits for
    each; submitit reads their states with `sacct`, so the cluster needs its accounting."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{key if key in queue_keys else f"slurm_{key}": v for key, v in params.items()}
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        numbers = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        for number, overrides in zip(numbers, job_overrides, strict=True):
            print(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        jobs = executor.map_array(
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(numbers),
            numbers,
            [f"job_id_for_{number}" for number in numbers],
            [Singleton.get_state()] * len(numbers),
        )
        return [result(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]


# SLURM's end states of a job stopped from outside: it wrote no result, so none is waited for
# (submitit waits 15 s for a result file that a slow shared disk may not show yet).
STOPPED = {"CANCELLED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "TIMEOUT"}


def result(job, overrides: Sequence[str]) -> JobReturn:
    """The job's return, or, where it ended without one, a return with no value: a job that did
    not finish, as a failed job's is (`sweeps.sweep.run_job`)."""
    from submitit.core.utils import UncompletedJobError

    job.wait()
    try:
        if job.state.split()[0] in STOPPED and not job.paths.result_pickle.exists():
            raise UncompletedJobError(job.state)
        return job.results()[0]
    except UncompletedJobError:
        print(
            f"SLURM job {job.job_id} ({' '.join(filter_overrides(overrides))}) ended "
            f"{job.state} without a result; its log: {job.paths.stderr}"
        )
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
