"""`python -m mnist_exp.compare`: the command; the code is in `mnist_exp.sweeps.compare`."""

from mnist_exp.sweeps.compare import main, parser

__all__ = ["parser"]

if __name__ == "__main__":
    main()
