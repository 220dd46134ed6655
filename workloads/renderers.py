"""How an owner reads a job's results: JSON Lines and CSV for every workload, from its job
model's columns (`workloads.records`), and the formats a workload ships renderers for (the
link checker: text and HTML; the probe: text), found here by bundle name.

A workload's renderers apply only to a job whose results have the columns they read: a
bundle of another owner under the same name, with other records, gets the generic formats.
The dashboard lists a job's problems with the workload's `problems` fragment, where it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overlay.errors import OsaasError
from workloads import records
from workloads.linkcheck import report as linkcheck_report
from workloads.probe import report as probe_report

GENERIC = ("jsonl", "csv")
Rows = Sequence[Mapping[str, Any]]


class UnknownFormat(OsaasError):
    """A format a job's workload has no renderer for."""

    code = "invalid_input"


@dataclass(frozen=True, slots=True)
class Renderers:
    """What one workload ships to show its results."""

    needs: frozenset[str]  # the columns its renderers read
    formats: Mapping[str, Callable[[Rows], str]]  # format -> rows (finished) -> text
    problems: tuple[str, ...] = ()  # counts the dashboard lists as problems
    problems_html: Callable[[Rows], str] | None = None  # the dashboard's fragment of those
    problems_css: str = ""  # the style rules that fragment needs


def _linkcheck(render: Callable[[Sequence[Mapping[str, Any]]], str]) -> Callable[[Rows], str]:
    return lambda rows: render(linkcheck_report.items(rows))


REGISTRY: dict[str, Renderers] = {
    "linkcheck": Renderers(
        needs=frozenset({"url", "result", "status", "final_url", "redirects", "error", "referrers", "depth"}),
        formats={"text": _linkcheck(linkcheck_report.to_text), "html": _linkcheck(linkcheck_report.to_html)},
        problems=linkcheck_report.PROBLEMS,
        problems_html=_linkcheck(linkcheck_report.problems_table),
        problems_css=linkcheck_report.PROBLEMS_CSS,
    ),
    "probe": Renderers(needs=probe_report.NEEDS, formats={"text": probe_report.to_text}),
}


def of(workload: str, columns: Sequence[str]) -> Renderers | None:
    """The renderers of `workload` when its job's rows have the columns they read."""
    found = REGISTRY.get(workload)
    return found if found is not None and found.needs <= set(columns) else None


def formats(workload: str, columns: Sequence[str]) -> tuple[str, ...]:
    own = of(workload, columns)
    return GENERIC + (tuple(own.formats) if own is not None else ())


def render(workload: str, columns: Sequence[str], rows: Rows, fmt: str) -> str:
    """`rows` (a job's results rows, finished or not) in format `fmt`; `UnknownFormat` with
    the formats there are when the workload has no renderer for it."""
    finished = [row for row in rows if row.get("done", True)]
    if fmt == "jsonl":
        return records.to_json_lines(finished, columns)
    if fmt == "csv":
        return records.to_csv(finished, columns)
    own = of(workload, columns)
    if own is None or fmt not in own.formats:
        raise UnknownFormat(
            f"the {workload} workload has no {fmt} renderer; choose one of {', '.join(formats(workload, columns))}"
        )
    return own.formats[fmt](finished)
