"""Hydra loads and instantiates sweepers only from the `hydra_plugins` package: this makes the
project's Optuna sweeper (`mnist_exp.sweeps.sweeper`) one of them."""

from mnist_exp.sweeps import sweeper


class OptunaSweeper(sweeper.OptunaSweeper):
    """`hydra/sweeper=mnist_exp_optuna` (what `hparams_search=optuna` selects)."""
