"""`python -m mnist_exp.predict`: the command; the code is in `mnist_exp.serving.predict`."""

from mnist_exp.serving.predict import Predictor, load_predictor, main, predict_digit

__all__ = ["Predictor", "load_predictor", "predict_digit"]

if __name__ == "__main__":
    raise SystemExit(main())
