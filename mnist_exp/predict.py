"""`python -m mnist_exp.predict`: the command; the code is in `mnist_exp.serving.predict`."""

from mnist_exp.serving.predict import Predictor, load_predictor, main, parser, predict_digit

__all__ = ["Predictor", "load_predictor", "parser", "predict_digit"]

if __name__ == "__main__":
    raise SystemExit(main())
