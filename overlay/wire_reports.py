"""The wire's reports beyond one unit's final report: several finished units in one request
(`ReportBatch`, POST /v1/reports/batch), and the items a running unit streamed (`ItemsReport`,
POST /v1/reports/items: process API version 2's `item` frames, handed over while the unit
runs). Parsed like every message, by `overlay.wire.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.wire import Name, Report, Text

MAX_REPORT_BATCH = 256  # reports in one POST /v1/reports/batch
MAX_STREAMED_BATCH = 1000  # items in one POST /v1/reports/items (the body's size is capped too)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """Several finished units of one peer, reported in one signed request."""

    reports: list[Report]

    def __post_init__(self) -> None:
        _require(
            1 <= len(self.reports) <= MAX_REPORT_BATCH,
            f"reports must hold 1..{MAX_REPORT_BATCH} reports; send the rest in another batch",
        )


@dataclass(frozen=True, slots=True)
class ReportVerdict:
    """The answer to one report of a batch, in the batch's order. A refused report (`accepted`
    False) would be refused again: the peer drops it; `code` says why, as an error body would."""

    unit_id: int
    accepted: bool
    reason: Text = ""  # "duplicate" when accepted again; the refusal's message otherwise
    code: str = ""  # a refusal's error code: stale_lease, not_found or invalid_input


@dataclass(frozen=True, slots=True)
class ReportBatchResponse:
    results: list[ReportVerdict]


@dataclass(frozen=True, slots=True)
class ItemsReport:
    """Records a running unit's workload streamed, under the unit's lease (its fencing token):
    the coordinator finishes their items at once, checked against the job's model as a final
    report's are. An item already finished (sent again, streamed twice) is taken once: the
    first record counts. Records that break the model refuse the report as the final report's
    would be refused (the unit queued again, using an attempt, the version charged)."""

    unit_id: int
    token: int
    items: list[dict]
    bundle_version: Name | None = None  # the bundle version that runs the unit

    def __post_init__(self) -> None:
        _require(
            1 <= len(self.items) <= MAX_STREAMED_BATCH,
            f"items must hold 1..{MAX_STREAMED_BATCH} records; send the rest in another report",
        )


@dataclass(frozen=True, slots=True)
class ItemsAnswer:
    """The answer to an `ItemsReport`: `taken` items finished now (the others were already);
    not `accepted` when its records were refused (`reason`: why), and the unit is then no
    longer the peer's."""

    accepted: bool
    taken: int = 0
    reason: Text = ""
