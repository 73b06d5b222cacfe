"""Hydra instantiates launchers only from the `hydra_plugins` package: this makes the project's
SLURM launcher (`mnist_exp.sweeps.launcher`) one of them."""

from mnist_exp.sweeps import launcher


class SlurmLauncher(launcher.SlurmLauncher):
    """`hydra/launcher=slurm`."""
