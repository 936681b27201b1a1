"""report.html: one self-contained page with the provenance, every table and every figure."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

from test_analysis import report, store  # noqa: F401  (the known MLflow store and the tables written from it)


class _Links(HTMLParser):
    """Every URL the page would fetch or link to, by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [(tag, value or "") for name, value in attrs if name in ("src", "href", "srcset", "data")]


def test_report_is_self_contained(report: Path) -> None:  # noqa: F811
    page = (report / "report.html").read_text(encoding="utf-8")
    links = _Links()
    links.feed(page)
    assert links.urls and all(url.startswith("data:image/png;base64,") for _, url in links.urls)
    assert {tag for tag, _ in links.urls} == {"img"}
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"https?://", page)
    images = re.findall(r'<img alt="([^"]+)"', page)
    assert {"accuracy_ipc10.png", "gallery_mnist_baseline.png"} <= set(images)


def test_report_holds_the_tables(report: Path) -> None:  # noqa: F811
    page = (report / "report.html").read_text(encoding="utf-8")
    titles = re.findall(r"^## (.+)$", (report / "all_tables.md").read_text(encoding="utf-8"), flags=re.M)
    assert len(titles) == 10  # provenance, Tables 1-5, ablation, the run list, the audit's flagged findings, figures
    for title in titles[1:-1]:
        assert f"<h2>{html.escape(title)}</h2>" in page, title
    assert page.index("How the runs were obtained") < page.index("<h2>Table 1")
    assert "<code>analysis-test</code>: 11 FINISHED runs" in page and "NVIDIA H100 80GB HBM3 (n=1)" in page
    assert "<td>91.00 ± 1.41</td>" in page and "<td>99.86/1000</td>" in page  # Table 1 and Table 4 cells


def test_notes_markdown_becomes_paragraphs_lists_bold_and_code() -> None:
    from analysis.report import notes_html

    text = "**Audit** (`raydistill audit`): 2 <flags>.\n- Table 5: a\n  - nested `x`\nafter the list\n\nsecond"
    assert notes_html(text) == (
        '<p class="notes"><strong>Audit</strong> (<code>raydistill audit</code>): 2 &lt;flags&gt;.</p>\n'
        '<ul class="notes"><li>Table 5: a</li><li>nested <code>x</code></li></ul>\n'
        '<p class="notes">after the list</p>\n<p class="notes">second</p>')
