"""MkDocs hook: fills the config reference page from the YAML files and their comments."""

from mnist_exp.config.reference import reference

MARKER = "<!-- config reference -->"


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Replace the marker on docs/reference/config.md with the generated reference."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
