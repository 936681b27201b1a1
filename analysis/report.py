"""One self-contained HTML page of the regenerated tables and figures (``report.html``).

Nothing external (no scripts, style sheets, fonts or linked images): figures are embedded as
base64 PNG data URIs, so the page opens offline, travels as one file and renders inline in
MLflow's artifact view.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.tables import Table

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 90em; margin: 1.5em auto; padding: 0 1em; }
h2 { margin-top: 2em; font-size: 1.2em; }
.notes { color: #555; font-size: 12px; max-width: 70em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; white-space: nowrap; }
td { text-align: right; }
td.wrap { white-space: normal; min-width: 16em; max-width: 32em; text-align: left; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
code { background: #f3f3f3; padding: 0 3px; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
"""


def inline(text: str) -> str:
    """One line of the tables' markdown as HTML: escaped, with `code` spans and **bold** kept."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else _links(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part))
                   for i, part in enumerate(parts))


def _links(text: str) -> str:
    """Markdown links [text](target) as anchors (the target already escaped)."""
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def notes_html(text: str) -> str:
    """A table's notes (markdown paragraphs and `- ` list items, nesting flattened) as HTML."""
    blocks: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def close() -> None:
        if paragraph:
            blocks.append(f"<p class=\"notes\">{inline(' '.join(paragraph))}</p>")
        if items:
            blocks.append("<ul class=\"notes\">" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
        paragraph.clear()
        items.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("- "):
            if paragraph:
                close()
            items.append(stripped[2:])
        elif stripped:
            if items:
                close()
            paragraph.append(stripped)
        else:
            close()
    close()
    return "\n".join(blocks)


def table_html(table: Table) -> str:
    frame = table.frame.to_html(border=0, escape=True, sparsify=True)
    return f"<h2>{html.escape(table.title)}</h2>\n{notes_html(table.notes)}\n<div class=\"scroll\">{frame}</div>"


def figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def render(title: str, provenance: Sequence[str], tables: Sequence[Table], figures: Sequence[Path]) -> str:
    """The page: title, how the runs were obtained, every table, every figure."""
    items = "\n".join(f"<li>{inline(line)}</li>" for line in provenance)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<h2>How the runs were obtained</h2>\n<ul>\n{items}\n</ul>",
        *(table_html(table) for table in tables),
        "<h2>Figures</h2>",
        *(figure_html(path) for path in figures),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def render_sections(title: str, sections: Sequence[tuple[str, str, Sequence[Table], Sequence[Path]]]) -> str:
    """A page of numbered sections, each a heading, markdown notes, tables and figures."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for number, (heading, text, tables, figures) in enumerate(sections, 1):
        body.append(f"<h2>{number}. {html.escape(heading)}</h2>")
        body += [notes_html(text)] if text else []
        for table in tables:
            frame = wrap_long_text(table.frame.to_html(border=0, escape=True, sparsify=True))
            body.append(f"<h3>{html.escape(table.title)}</h3>\n{notes_html(table.notes)}\n<div class=\"scroll\">{frame}</div>")
        body += [figure_html(path) for path in figures]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def wrap_long_text(frame_html: str, longer_than: int = 40) -> str:
    """Let cells of long text wrap (verdicts, sources), numbers stay on one line."""
    return re.sub(r"<td>([^<]{%d,})</td>" % longer_than, r'<td class="wrap">\1</td>', frame_html)


def write_html(path: Path, title: str, provenance: Sequence[str], tables: Sequence[Table],
               figures: Sequence[Path]) -> Path:
    path.write_text(render(title, provenance, tables, figures), encoding="utf-8")
    return path
