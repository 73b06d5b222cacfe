"""The documentation site builds with warnings as errors, its generated references included."""

import os
import subprocess
import sys

from mnist_exp.config.describe import yaml_comments

from .helpers import ROOT


def test_docs_build_strictly_with_the_config_and_api_references(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    config = (site / "reference" / "config" / "index.html").read_text()
    cnn = (ROOT / "mnist_exp" / "conf" / "model" / "cnn.yaml").read_text()
    assert "<code>model.dropout_conv</code>" in config
    assert yaml_comments(cnn, "model.")["model.dropout_conv"] in config
    api = (site / "reference" / "api" / "index.html").read_text()
    names = ("run.run_experiment", "serving.predict.predict_digit", "serving.predict.Predictor")
    for name in names:
        assert f'id="mnist_exp.{name}"' in api
