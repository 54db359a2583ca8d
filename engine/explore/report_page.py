"""One self-contained HTML page: summary numbers, plots embedded as base64 PNG, findings tables."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

import pandas as pd

from engine.system.atomic import write_text

ROWS_PER_KIND = 100  # the page stays light; the CSV beside it has every row
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee}h2{margin-top:1.6em}
.muted{color:#777}"""


def embed_png(path: str | Path) -> str:
    """An <img> tag carrying the PNG itself (the page works when moved or mailed)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


def _summary_table(summary: Sequence[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    return f"<table>{rows}</table>"


def _findings_section(findings: pd.DataFrame) -> str:
    if findings.empty:
        return "<p>No problems found.</p>"
    counts = findings.groupby(["kind", "action"]).size().rename("findings").reset_index()
    parts = [counts.to_html(index=False, escape=True)]
    for kind, rows in findings.groupby("kind", sort=False):
        shown = rows.head(ROWS_PER_KIND).dropna(axis=1, how="all").drop(columns="kind")
        more = (f'<p class="muted">{len(rows) - ROWS_PER_KIND} more in findings.csv</p>'
                if len(rows) > ROWS_PER_KIND else "")
        parts.append(f"<h3>{html.escape(str(kind))} ({len(rows)})</h3>"
                     + shown.to_html(index=False, escape=True, na_rep="") + more)
    return "\n".join(parts)


def write_report(path: str | Path, title: str, summary: Sequence[tuple[str, object]],
                 plots: Sequence[tuple[str, Path]], findings: pd.DataFrame, notes: Sequence[str] = ()) -> Path:
    """Write report.html (atomically): summary, every plot embedded, then the findings by kind."""
    body = [f"<h1>{html.escape(title)}</h1>", _summary_table(summary)]
    body += [f"<p>{html.escape(n)}</p>" for n in notes]
    for plot_title, plot_path in plots:
        body.append(f"<h2>{html.escape(plot_title)}</h2>{embed_png(plot_path)}")
    body.append("<h2>Findings</h2>" + _findings_section(findings))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = Path(path)
    write_text(path, page)
    return path
