"""The HTML report: self-contained (data URIs, no external references, no script), escaped text, figure files."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_fakes import METHODS, fake_galleries, fake_metrics, fake_report, fake_table

from diffguard.report.html_report import metrics_html, write_report


class Collect(HTMLParser):
    """Collects attributes of every start tag, and the text of the cells of table#metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self._in_metrics = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table" and dict(attrs).get("id") == "metrics":
            self._in_metrics = True
        elif self._in_metrics and tag == "tr":
            self.rows.append([])
        elif self._in_metrics and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_metrics &= tag != "table"
        self._in_cell &= tag not in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Collect]:
    path = fake_report(tmp_path_factory.mktemp("report"),
                       meta={"command": "diffguard eval <script>alert(1)</script>", "seeds": [0, 1],
                             "models": {"clf": "fmnist6 & co"}})
    html = path.read_text(encoding="utf-8")
    parsed = Collect()
    parsed.feed(html)
    return path, html, parsed


def test_report_is_self_contained(report: tuple[Path, str, Collect]) -> None:
    _, html, parsed = report
    assert not re.search(r"https?://", html) and "<script" not in html.lower()
    assert not [t for t, _ in parsed.tags if t in ("link", "script", "iframe", "object")]
    images = [a["src"] for t, a in parsed.tags if t == "img"]
    assert len(images) == 2 + 3 + 4  # ROC per OOD set, histogram per method, 4 galleries
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_escapes_text(report: tuple[Path, str, Collect]) -> None:
    _, html, _ = report
    assert "<title>diffguard report: fake &lt;run&gt; &amp; co</title>" in html
    assert "diffguard eval &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<dd>0, 1</dd>" in html and "fmnist6 &amp; co" in html
    assert "<run>" not in html


def test_report_metrics_table(report: tuple[Path, str, Collect]) -> None:
    _, _, parsed = report
    header, *rows = parsed.rows
    assert header[:4] == ["method", "set", "group", "AUROC ↑"] and "FPR@95 (ID-pos, paper) ↓" in header
    assert len(rows) == len(fake_metrics()) == 6
    assert rows[5][:4] == ["DiffGuard", "far-digits", "far", "81.00"]


def test_report_writes_figure_files(report: tuple[Path, str, Collect]) -> None:
    path, html, _ = report
    names = sorted(p.name for p in (path.parent / "figures").iterdir())
    assert "roc-test-vs-near-fmnist.png" in names and "hist-DiffGuard.png" in names
    assert len(names) == 9 and all(f"figures/{n}" in html for n in names)


def test_report_notes_empty_gallery_and_needs_one_id_set(tmp_path: Path) -> None:
    table = fake_table()
    galleries = {"MSP / far <x>": [], **fake_galleries(table, k=1)}
    html = write_report(tmp_path, title="t", metrics=[], table=table, methods=METHODS[:1], galleries=galleries,
                        meta={}).read_text()
    assert "MSP / far &lt;x&gt;: no samples." in html and "No metric rows." in html
    table.roles["far-digits"] = "id"
    with pytest.raises(ValueError, match="exactly one set with role 'id'"):
        write_report(tmp_path, title="t", metrics=[], table=table, methods=METHODS, galleries={}, meta={})


def test_metrics_html_marks_numbers() -> None:
    html = metrics_html([{"method": "<b>", "AUROC": np.float32(0.5)}])
    assert '<td>&lt;b&gt;</td><td class="num">50.00</td>' in html
