"""`python -m mnist_exp.robustness`: the command; the code is in `mnist_exp.serving.robustness`."""

from mnist_exp.serving.robustness import main, parser

__all__ = ["parser"]

if __name__ == "__main__":
    raise SystemExit(main())
