"""Link-check reports from a job's results: text, JSON Lines, CSV, HTML. Pure functions, used by
`osaas job results`, `osaas check` and the coordinator's dashboard.

An item is what the coordinator returns per checked URL: url, result, status, final_url,
redirects, error, referrers, depth.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

RESULTS = ("ok", "broken", "timeout", "error", "excluded")
PROBLEMS = ("broken", "timeout", "error")
FORMATS = ("text", "json", "csv", "html")
START_URLS = "(start URLs)"

Item = Mapping[str, Any]


def has_problems(items: Iterable[Item]) -> bool:
    return any(item["result"] in PROBLEMS for item in items)


def summary(items: Iterable[Item]) -> str:
    counts = Counter(item["result"] for item in items)
    total = sum(counts.values())
    parts = ", ".join(f"{counts[r]} {r}" for r in RESULTS if counts[r])
    return f"Checked {total} URL{'s' if total != 1 else ''}: {parts or 'nothing'}"


def problems_by_page(items: Iterable[Item]) -> dict[str, list[Item]]:
    """Problem links grouped by the page that contains them, pages and links sorted."""
    pages: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item["result"] not in PROBLEMS:
            continue
        for page in item.get("referrers") or [START_URLS]:
            pages[page].append(item)
    return {page: sorted(pages[page], key=lambda i: i["url"]) for page in sorted(pages)}


def _public(item: Item) -> dict[str, Any]:
    return {
        "url": item["url"],
        "result": item["result"],
        "status": item.get("status"),
        "final_url": item.get("final_url"),
        "referrers": list(item.get("referrers") or []),
        "error": item.get("error"),
        "redirects": list(item.get("redirects") or []),
        "depth": item.get("depth"),
    }


def to_json_lines(items: Iterable[Item]) -> str:
    return "".join(json.dumps(_public(item), ensure_ascii=False) + "\n" for item in items)


def to_csv(items: Iterable[Item]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["url", "result", "status", "final_url", "error", "referrers", "redirects"])
    for item in items:
        row = _public(item)
        writer.writerow(
            [
                row["url"],
                row["result"],
                "" if row["status"] is None else row["status"],
                row["final_url"] or "",
                row["error"] or "",
                " ".join(row["referrers"]),
                " ".join(row["redirects"]),
            ]
        )
    return out.getvalue()


def _describe(item: Item) -> str:
    status = item.get("status")
    line = f"{item['result']:<8} {status if status is not None else '-':<4} {item['url']}"
    final_url = item.get("final_url")
    if final_url and final_url != item["url"]:
        line += f" -> {final_url}"
    detail = item.get("error")
    if detail and detail != f"HTTP {status}":
        line += f"  ({detail})"
    return line


def to_text(items: list[Item]) -> str:
    lines = [summary(items)]
    grouped = problems_by_page(items)
    if not grouped:
        lines.append("No broken links.")
    for page, links in grouped.items():
        lines.append("")
        lines.append(page)
        lines.extend("  " + _describe(link) for link in links)
    return "\n".join(lines) + "\n"


def to_html(items: list[Item]) -> str:
    esc = html.escape
    rows = []
    for page, links in problems_by_page(items).items():
        rows.append(f'<tr class="page"><th colspan="4">{esc(page)}</th></tr>')
        for link in links:
            status = link.get("status")
            rows.append(
                "<tr>"
                f'<td class="{esc(link["result"])}">{esc(link["result"])}</td>'
                f"<td>{'' if status is None else status}</td>"
                f'<td><a href="{esc(link["url"])}">{esc(link["url"])}</a></td>'
                f"<td>{esc(link.get('error') or '')}</td>"
                "</tr>"
            )
    body = "\n".join(rows) or '<tr><td colspan="4">No broken links.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>osaas link check</title>
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


def render(items: list[Item], fmt: str) -> str:
    if fmt == "json":
        return to_json_lines(items)
    if fmt == "csv":
        return to_csv(items)
    if fmt == "html":
        return to_html(items)
    if fmt == "text":
        return to_text(items)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
