"""Write the report's content as HTML (self-contained) and Markdown, with jinja2 templates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from ..errors import LossbenchError

FORMATS = {"html": "report.html", "md": "report.md"}
TEMPLATES = {"html": "report.html.j2", "md": "report.md.j2"}


def _md_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lossbench.report", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _md_cell
    return env


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    out = tuple(str(f).lower() for f in formats)
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise LossbenchError(
            f"report.formats must be a non-empty list drawn from {', '.join(FORMATS)}; got {list(formats)!r}. "
            f"E.g. report.formats=[html,md]."
        )
    return out


def render(context: Mapping[str, Any], out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write one file per format under ``out_dir``; return ``{format: path}``."""
    from .words import SECTION_TITLES

    out: dict[str, Path] = {}
    ctx = {"titles": SECTION_TITLES, **context}
    for fmt in check_formats(formats):
        text = _environment(autoescape=fmt == "html").get_template(TEMPLATES[fmt]).render(**ctx)
        path = out_dir / FORMATS[fmt]
        path.write_text(text, encoding="utf-8")
        out[fmt] = path
    return out
