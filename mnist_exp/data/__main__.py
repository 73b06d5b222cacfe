"""`python -m mnist_exp.data`: fetch, verify and cache MNIST ahead of time."""

from mnist_exp.data.mnist import main, parser

__all__ = ["parser"]

if __name__ == "__main__":
    main()
