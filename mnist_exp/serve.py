"""`python -m mnist_exp.serve`: the command; the code is in `mnist_exp.serving.serve`."""

from mnist_exp.serving.serve import main, parser

__all__ = ["parser"]

if __name__ == "__main__":
    raise SystemExit(main())
