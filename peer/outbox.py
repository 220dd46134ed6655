"""Finished results kept on disk until a coordinator has acknowledged them.

One file per report, written atomically (overlay.files.atomic_file), so a peer killed at any moment
either has the whole report on disk or never claimed to have finished the unit.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from overlay import wire
from overlay.files import atomic_file

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PendingReport:
    coordinator: str
    report: wire.Report
    path: Path


class Outbox:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, coordinator: str, report: wire.Report) -> Path:
        tag = hashlib.sha256(coordinator.encode()).hexdigest()[:12]
        return self._dir / f"{tag}-{report.unit_id}-{report.token}.report"

    def put(self, coordinator: str, report: wire.Report) -> PendingReport:
        path = self._path(coordinator, report)
        with atomic_file(path) as f:
            f.write(wire.encode({"coordinator": coordinator, "report": wire.to_obj(report)}))
        return PendingReport(coordinator, report, path)

    def pending(self) -> list[PendingReport]:
        found = []
        for path in sorted(self._dir.glob("*.report")):
            try:
                obj = wire.decode(path.read_bytes())
                coordinator = obj["coordinator"]
                report = wire.parse(wire.Report, obj["report"])
                if not isinstance(coordinator, str):
                    raise wire.WireError("coordinator must be a string")
            except (OSError, KeyError, TypeError, wire.WireError) as exc:
                # Keep the bytes for a person to look at, but never trip over them again.
                log.error("unreadable outbox entry %s set aside: %s", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            found.append(PendingReport(coordinator, report, path))
        return found

    def remove(self, pending: PendingReport) -> None:
        pending.path.unlink(missing_ok=True)
