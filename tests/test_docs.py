"""The documentation: the site builds with warnings as errors, its generated references included;
its figures are what their records render; the README and the pages keep to their rules (a short
README, no dated prose, the changes in the changelog); a group's options, where a page lists them,
are the files in conf/."""

import os
import re
import subprocess
import sys
import tomllib

from mnist_exp.config.compose import CONF_DIR
from mnist_exp.config.describe import yaml_comments
from mnist_exp.config.options import group_defaults, group_options
from mnist_exp.results.blocks import HEADLINE
from mnist_exp.results.records import FOLDER, read_records
from mnist_exp.results.render import MARKED, pages, render_pages

from .helpers import ROOT

RECORDS = read_records(ROOT / FOLDER)
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
MARKER = re.compile(r"<!-- /?results[^>]*-->")


def prose(text: str) -> list[tuple[int, str]]:
    """The numbered lines of a Markdown page outside code blocks and tables."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not line.lstrip().startswith("|"):
            lines.append((number, line))
    return lines


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


def test_every_page_equals_what_its_records_render():
    rendered = render_pages(ROOT, RECORDS)
    assert ROOT / "README.md" in rendered and ROOT / "docs" / "results.md" in rendered
    stale = [
        str(path.relative_to(ROOT)) for path, text in rendered.items() if path.read_text() != text
    ]
    assert not stale, f"stale: {stale}; run `make results`"


def test_the_readme_headline_is_the_records():
    readme = (ROOT / "README.md").read_text()
    block = next(m for m in MARKED.finditer(readme) if m["key"] == "headline")
    for name, command in HEADLINE:
        assert f"`{command}`" in block["body"] and RECORDS[name]["title"] in block["body"]
    results = (ROOT / "docs" / "results.md").read_text()
    assert block["body"] in results  # the same table on the results page


def test_every_record_is_shown_somewhere_and_every_figure_cites_a_record():
    keys = [m["key"].split() for path in pages(ROOT) for m in MARKED.finditer(path.read_text())]
    shown = {name for _, *names in keys for name in names} | {name for name, _ in HEADLINE}
    assert set(RECORDS) <= shown, f"records no page shows: {set(RECORDS) - shown}"
    assert ["measured"] in keys  # the page that says where each figure came from
    for record in RECORDS.values():
        machine = record["machine"]
        assert machine["cpu"] and machine["cores"] and ISO_DATE.fullmatch(record["measured"])


def test_results_page_is_short_and_no_prose_carries_a_date():
    assert len((ROOT / "docs" / "results.md").read_text().splitlines()) <= 300
    dated = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in pages(ROOT)
        for number, line in prose(path.read_text())
        if ISO_DATE.search(line)
    ]
    assert not dated, f"dates in prose (records carry them): {dated}"


def test_the_readme_fits_five_minutes_and_the_changes_live_in_the_changelog():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 120
    shown = [(number, MARKER.sub("", line)) for number, line in prose("\n".join(readme))]
    long = [number for number, line in shown if len(line) > 100]  # as read: markers aside
    assert not long, f"README lines over 100 characters: {long}"
    assert not any(line.startswith("## Changes") for line in readme)
    for picture in ("docs/images/mlflow-run.png", "docs/images/draw-page.png"):
        assert f"]({picture})" in "\n".join(readme) and (ROOT / picture).is_file()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == "0.2.0" and "\n## [0.2.0] - " in changelog and "## [Unreleased]" in changelog


# A page's hand-written list of a group's options, other than in tables (which are found).
LISTS = [("README.md", "experiment", re.compile(r"a named recipe: (.*) \|$", re.M))]


def table(lines: list[str], start: int) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each row of the Markdown table whose header is `lines[start]`."""
    rows = []
    for number, line in enumerate(lines[start + 2 :], start=start + 3):
        if not line.startswith("|"):
            break
        rows.append((number, [cell.strip() for cell in line.strip().strip("|").split(" | ")]))
    return rows


def option_lists() -> list[tuple[str, str, str]]:
    """(where, group, the text that names its options) for each list of a group's options on a
    page: a row of a `| group | options |` table, a `| `model=` |` table's first column, LISTS."""
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    found = []
    for page in pages(ROOT):
        name, lines = page.relative_to(ROOT), page.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"\| group \| options \|", line):
                rows = table(lines, number)
                found += [(f"{name}:{n}", row[0].strip("`"), row[1]) for n, row in rows]
            elif (column := re.match(r"\| `(\w+)=` \|", line)) and column[1] in groups:
                rows = table(lines, number)
                found.append((f"{name}:{number + 1}", column[1], " ".join(r[0] for _, r in rows)))
    for name, group, pattern in LISTS:
        text = (ROOT / name).read_text()
        for match in pattern.finditer(text):
            found.append((f"{name}:{text.count(chr(10), 0, match.start()) + 1}", group, match[1]))
    return [(where, group, text) for where, group, text in found if group in groups]


def test_every_list_of_a_groups_options_on_a_page_names_exactly_its_files_in_conf():
    """A new option file fails here until each page that lists its group's options names it."""
    lists = option_lists()
    listed = {group for _, group, _ in lists}
    assert listed >= {"model", "schedule", "callbacks", "augment", "experiment"}
    defaults = group_defaults((CONF_DIR / "config.yaml").read_text())
    for where, group, text in lists:
        named = set(re.findall(r"`(\w+)`", text))
        options = set(group_options(CONF_DIR, group))
        assert named == options, (
            f"{where} lists {sorted(named)}; conf/{group}/ holds {sorted(options)}: name each there"
        )
        marked = set(re.findall(r"`(\w+)` \(default\)", text))
        assert marked <= {defaults.get(group, (None, None))[0]}, (
            f"{where}: {marked} is not the default"
        )
