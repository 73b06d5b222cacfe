"""`python -m mnist_exp.robustness`: write the robustness set (`mnist_exp.data.robustness`) and
print the share of it a model reads right, through the same preprocessing as
`python -m mnist_exp.predict`."""

import argparse
from pathlib import Path

import numpy as np

from mnist_exp.data.robustness import (
    HELD_OUT_ROWS,
    PER_ROW,
    VALIDATION_ROWS,
    fonts,
    handwriting_fonts_missing,
    label,
    make_set,
    part_of,
)
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.names import ROBUSTNESS_PARTS, WRITERS_HELD_OUT, WRITERS_VALIDATION

# What each writers' part is, beside its figure: the rows of scikit-learn's digits it renders.
ROWS = {
    WRITERS_VALIDATION: f"rows {VALIDATION_ROWS[0]}-{VALIDATION_ROWS[-1]}, for selection",
    WRITERS_HELD_OUT: f"rows {HELD_OUT_ROWS[0]}-{HELD_OUT_ROWS[-1]}, never chosen on",
}


def accuracy(paths: list[Path], model: str | None = None) -> tuple[float, list[Path]]:
    """The share of `paths` the predictor (default: the store's best model) reads right, with
    the preprocessing of `python -m mnist_exp.predict`; and the files it got wrong."""
    from mnist_exp.data.images import preprocess_image
    from mnist_exp.serving.predict import load_predictor

    predictor = load_predictor(model)
    images = np.stack([preprocess_image(path) for path in paths])
    predicted = predictor.probabilities(images).argmax(axis=1)
    wrong = [path for path, digit in zip(paths, predicted, strict=False) if digit != label(path)]
    return 1 - len(wrong) / len(paths), wrong


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(
        prog="python -m mnist_exp.robustness", description=__doc__.splitlines()[0]
    )
    found.add_argument("--folder", type=Path, default=Path("outputs/robustness"))
    found.add_argument("--per-font", type=int, default=5, help="versions of each digit per font")
    found.add_argument(
        "--per-row",
        type=int,
        default=PER_ROW,
        help="versions of each of scikit-learn's 1,797 handwritten digits",
    )
    found.add_argument("--seed", type=int, default=0)
    found.add_argument("--model", help="as for mnist_exp.predict (default: the best in the store)")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        paths = make_set(args.folder, args.per_font, args.seed, args.per_row)
        share, wrong = accuracy(paths, args.model)
    except MnistExpError as error:
        exit_with(error)
    if missing := handwriting_fonts_missing():
        print(f"{len(missing)} of Debian's handwriting fonts are not installed: make fonts")
    hand = f"{len(HELD_OUT_ROWS) + len(VALIDATION_ROWS)} handwritten x {args.per_row}"
    print(f"{len(paths)} images ({len(fonts())} fonts, {hand}) in {args.folder}")
    for name in ROBUSTNESS_PARTS:
        members = [p for p in paths if part_of(p) == name]
        right = 1 - sum(part_of(p) == name for p in wrong) / max(1, len(members))
        rows = f" ({ROWS[name]})" if name in ROWS else ""
        print(f"  {name}: {right:.4f} of {len(members)}{rows}")
    print(f"accuracy {share:.4f} ({len(wrong)} wrong: {', '.join(p.name for p in wrong[:10])}"
          f"{' ...' if len(wrong) > 10 else ''})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
