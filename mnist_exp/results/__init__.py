"""Results as data: each figure the docs quote is a record, `docs/results/<name>.json`, written by
the command that measured it; `python -m mnist_exp.results render` (`make results`) renders the
docs' tables and figures from the records."""
