"""The runs table as one self-contained HTML page: the table (click a heading to sort) and every run's
validation curves on shared axes, drawn as inline SVG (the page works when moved or mailed)."""
from __future__ import annotations

import html
import io
from pathlib import Path

from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, no global state
from matplotlib.ticker import MaxNLocator

from engine.runs.status import RunState
from engine.runs.table import COLUMNS, NUMERIC, cell
from engine.system.atomic import write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2;cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}.finished{color:#1a7f37}.stopped{color:#9a6700}
.failed,.damaged{color:#cf222e}.training{color:#0969da}code{font-size:12px}td.run{white-space:nowrap}svg{max-width:100%;height:auto}"""
# sort by a column on click: numbers by value (data-v), empty cells last; a second click reverses
SORT_SCRIPT = """document.querySelectorAll('th').forEach((th,i)=>th.onclick=()=>{const b=th.closest('table').tBodies[0];
const up=th.dataset.up!=='1';th.dataset.up=up?'1':'0';const v=r=>r.cells[i].dataset.v??r.cells[i].textContent;
[...b.rows].sort((x,y)=>{const a=v(x),c=v(y);if(a===''||c==='')return(a==='')-(c==='');
const d=isNaN(a)||isNaN(c)?a.localeCompare(c):a-c;return up?d:-d}).forEach(r=>b.appendChild(r))})"""


def curves_svg(states: list[RunState]) -> str:
    """Validation accuracy and loss by epoch of every run with a metrics.csv, one line per run (folds averaged)."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    acc_ax, loss_ax = fig.subplots(1, 2, sharex=True)
    drawn = 0
    for s in states:
        acc, loss = s.curve("val_acc"), s.curve("val_loss")
        if acc.empty:
            continue
        line, = acc_ax.plot(acc.index, acc.values, "-o", markersize=3, label=s.name)
        loss_ax.plot(loss.index, loss.values, "-o", markersize=3, color=line.get_color())
        drawn += 1
    for ax, title in ((acc_ax, "validation accuracy"), (loss_ax, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if drawn:
        fig.legend(loc="outside right upper", fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: without the XML prolog and DOCTYPE


def table_html(rows: list[dict]) -> str:
    """The table: one <tr> per run, numbers right-aligned and sortable by value."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in [*COLUMNS.values(), "next / detail"])
    body = []
    for r in rows:
        tds = []
        for c in COLUMNS:
            value = "" if r[c] is None else r[c]
            attrs = {"status": f' class="{html.escape(r["status"])}"', "run": ' class="run"'}.get(c, "")
            if c in NUMERIC:  # sorted by the number, not by how it reads (2m48s, 0.5065)
                attrs = f' class="num" data-v="{value}"'
            tds.append(f"<td{attrs}>{html.escape(cell(r, c))}</td>")
        tds.append(f"<td><code>{html.escape(r['detail'])}</code></td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_page(path: Path, folder: Path, states: list[RunState], rows: list[dict]) -> Path:
    """Write the page (atomically): a title, the table, the curves."""
    title = f"runs under {folder}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(rows)} runs. Scores are each fold's best epoch, averaged over folds; oof_acc once every fold "
            f"finished; wall is the time spent in epochs. Click a heading to sort.</p>{table_html(rows)}"
            f"<h2>Validation curves</h2>{curves_svg(states)}<script>{SORT_SCRIPT}</script></body></html>\n")
    write_text(path, page)
    return Path(path)
