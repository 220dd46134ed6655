"""The link checker's own reports of a job's results: text, JSON Lines, CSV, HTML, and the
dashboard's problems table. Pure functions, used through `workloads.renderers` by `osaas job
results` and the coordinator's dashboard, and by `osaas check` directly. Only the standard
library: this module ships in the link checker's bundle with the rest of the package.

An item is a results row of a link-check job (`items` makes one of what the coordinator
returns): url, result, status, final_url, redirects, error, referrers, depth.

Every field of an item came from a workload and a website, so it is hostile wherever it is
shown: HTML escapes everything and links only http(s) URLs (a downloaded report.html has no
Content-Security-Policy to stop a `javascript:` link); CSV cells that a spreadsheet would take
for a formula are neutralised (OWASP's CSV-injection rule); text has its control characters
(terminal escapes) replaced; and every shown field is capped at MAX_FIELD characters.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RESULTS = ("ok", "broken", "timeout", "error", "excluded")
PROBLEMS = ("broken", "timeout", "error")
# How the dashboard's problems table looks (its page's own style sheet knows no link checks).
PROBLEMS_CSS = """
tr.page th { background: #f3f4f6; padding-top: 8px; word-break: break-all; }
td.broken, td.error { color: #b00020; } td.timeout { color: #a15c00; }
"""
FORMATS = ("text", "json", "csv", "html")
START_URLS = "(start URLs)"
MAX_FIELD = 8 * 1024  # characters of one shown field: a long URL fits, a flood does not
# What a spreadsheet reads as the start of a formula (OWASP CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# C0 and C1 control characters but tab: escape sequences a terminal would obey.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_LINKABLE = re.compile(r"https?://", re.IGNORECASE)

Item = Mapping[str, Any]


def items(rows: Iterable[Item]) -> list[dict[str, Any]]:
    """Link-check items of a job's finished results rows: an item the platform gave up on
    (`failed`) is an error with that reason, as the link checker would say it."""
    found = []
    for row in rows:
        if row.get("done") is False:
            continue
        item = dict(row)
        if item.get("failed") is not None:
            item.update(result="error", error=item["failed"], redirects=item.get("redirects") or [])
        found.append(item)
    return found


def has_problems(items: Iterable[Item]) -> bool:
    return any(item["result"] in PROBLEMS for item in items)


def summary(items: Iterable[Item]) -> str:
    counts = Counter(item["result"] for item in items)
    total = sum(counts.values())
    parts = ", ".join(f"{counts[r]} {r}" for r in RESULTS if counts[r])
    return f"Checked {total} URL{'s' if total != 1 else ''}: {parts or 'nothing'}"


def problems_by_page(items: Iterable[Item]) -> dict[str, list[Item]]:
    """Problem links grouped by the page that contains them, pages and links sorted; a link
    down from some networks only (region-dependent) is one too, whatever the others said."""
    pages: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item["result"] not in PROBLEMS and item.get("verdict") != "region-dependent":
            continue
        for page in item.get("referrers") or [START_URLS]:
            pages[page].append(item)
    return {page: sorted(pages[page], key=lambda i: i["url"]) for page in sorted(pages)}


def sureness(item: Item) -> str:
    """How sure a result is, when other peers checked it again (the coordinator's `verdict`
    and each vantage point's answer): "" when one answer was enough."""
    verdict = item.get("verdict")
    if not verdict:
        return ""
    answers = [str(answer) for answer in item.get("answers") or []]
    if verdict == "pending":
        return "re-check pending"
    if verdict == "confirmed":
        return f"confirmed by {len(answers)} peers"
    if verdict == "unconfirmed":
        return "unconfirmed: no other peer came to check it"
    return f"{verdict}: {'; '.join(answers)}"


def _public(item: Item) -> dict[str, Any]:
    return {
        "url": item["url"],
        "result": item["result"],
        "status": item.get("status"),
        "final_url": item.get("final_url"),
        "referrers": list(item.get("referrers") or []),
        # Pages beyond the referrers the coordinator keeps (100) that link here too.
        "more_referrers": item.get("more_referrers") or 0,
        "error": item.get("error"),
        "redirects": list(item.get("redirects") or []),
        "depth": item.get("depth"),
        "verdict": item.get("verdict"),
        "answers": list(item.get("answers") or []),
    }


def to_json_lines(items: Iterable[Item]) -> str:
    return "".join(json.dumps(_public(item), ensure_ascii=False) + "\n" for item in items)


def to_csv(items: Iterable[Item]) -> str:
    out = io.StringIO()
    # RFC 4180 line ends, which also make the writer quote any cell holding a CR or LF.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "url",
            "result",
            "status",
            "final_url",
            "error",
            "referrers",
            "more_referrers",
            "redirects",
            "verdict",
            "answers",
        ]
    )
    for item in items:
        row = _public(item)
        cells = [
            row["url"],
            row["result"],
            "" if row["status"] is None else str(row["status"]),
            row["final_url"] or "",
            row["error"] or "",
            " ".join(row["referrers"]),
            str(row["more_referrers"]),
            " ".join(row["redirects"]),
            row["verdict"] or "",
            "; ".join(row["answers"]),
        ]
        writer.writerow([csv_cell(str(cell)) for cell in cells])
    return out.getvalue()


def csv_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: a leading formula character gets a quote
    before it (shown, not evaluated), and the cell is capped."""
    text = capped(text)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def capped(text: str) -> str:
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


def plain(text: str) -> str:
    """`text` safe for a terminal: capped, control characters shown as U+FFFD."""
    return _CONTROLS.sub("\ufffd", capped(text))


def link_html(url: str) -> str:
    """An escaped link to `url` when it is http(s), else the escaped text alone: never a
    `javascript:`, `data:` or other live scheme."""
    shown = html.escape(capped(url))
    if _LINKABLE.match(url) and len(url) <= MAX_FIELD:
        return f'<a href="{html.escape(url)}" rel="noopener noreferrer nofollow">{shown}</a>'
    return shown


def _describe(item: Item) -> str:
    status = item.get("status")
    line = f"{plain(str(item['result'])):<8} {status if status is not None else '-':<4} {plain(item['url'])}"
    final_url = item.get("final_url")
    if final_url and final_url != item["url"]:
        line += f" -> {plain(final_url)}"
    detail = item.get("error")
    if detail and detail != f"HTTP {status}":
        line += f"  ({plain(detail)})"
    if sureness(item):
        line += f"  [{plain(sureness(item))}]"
    return line


def to_text(items: Sequence[Item]) -> str:
    lines = [summary(items)]
    grouped = problems_by_page(items)
    if not grouped:
        lines.append("No broken links.")
    for page, links in grouped.items():
        lines.append("")
        lines.append(plain(page))
        lines.extend("  " + _describe(link) for link in links)
    return "\n".join(lines) + "\n"


def to_html(items: Sequence[Item]) -> str:
    def esc(value: object) -> str:
        return html.escape(capped(str(value)))

    rows = []
    for page, links in problems_by_page(items).items():
        rows.append(
            f'<tr class="page"><th colspan="4">{link_html(page) if page != START_URLS else esc(page)}</th></tr>'
        )
        for link in links:
            status = link.get("status")
            rows.append(
                "<tr>"
                f'<td class="{esc(link["result"])}">{esc(link["result"])}</td>'
                f"<td>{'' if status is None else esc(status)}</td>"
                f"<td>{link_html(link['url'])}</td>"
                f"<td>{esc(_detail(link))}</td>"
                "</tr>"
            )
    body = "\n".join(rows) or '<tr><td colspan="4">No broken links.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>osaas link check</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ padding: .25rem .5rem; text-align: left; border-bottom: 1px solid #ddd; }}
tr.page th {{ background: #f3f3f3; padding-top: .75rem; }}
.broken, .error {{ color: #b00020; }} .timeout {{ color: #a15c00; }}
</style></head>
<body><h1>Link check</h1><p>{esc(summary(items))}</p>
<table><thead><tr><th>result</th><th>status</th><th>link</th><th>detail</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
"""


def _detail(item: Item) -> str:
    """A problem's detail cell: its error, and how sure it is."""
    return " ".join(part for part in (item.get("error") or "", f"[{sureness(item)}]" if sureness(item) else "") if part)


def problems_table(items: Sequence[Item]) -> str:
    """The dashboard's table of problem links, page by page (a fragment of its job page)."""
    pages = problems_by_page(items)
    if not pages:
        return "<p class=muted>No broken links found (yet).</p>"
    rows = []
    for page, links in pages.items():
        rows.append(f'<tr class="page"><th colspan="4">{html.escape(page)}</th></tr>')
        for link in links:
            status = link.get("status")
            rows.append(
                f'<tr class="problem"><td class="{html.escape(link["result"])}">{html.escape(link["result"])}</td>'
                f"<td>{'' if status is None else status}</td><td>{html.escape(link['url'])}</td>"
                f"<td>{html.escape(capped(_detail(link)))}</td></tr>"
            )
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def render(items: Sequence[Item], fmt: str) -> str:
    if fmt == "json":
        return to_json_lines(items)
    if fmt == "csv":
        return to_csv(items)
    if fmt == "html":
        return to_html(items)
    if fmt == "text":
        return to_text(items)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
