"""The probe's results as text for a person: per URL, what each vantage point saw, and
whether they agree. Reads a job's results rows (`url`, `network`, the probe's fields,
`failed`); everything in them came from peers and websites, so it is shown escaped.
Standard library only: it ships in the bundle with the workload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_SHOWN = 300
NEEDS = frozenset({"url", "network", "status", "error", "dns", "connect", "tls", "first_byte", "total"})


def _plain(value: object) -> str:
    text = str(value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    return _CONTROLS.sub("\ufffd", text)


def _ms(seconds: object) -> str:
    return "-" if not isinstance(seconds, (int, float)) else f"{seconds * 1000:.0f}"


def _answer(row: Row) -> str:
    if row.get("failed") is not None:
        return f"no answer: {_plain(row['failed'])}"
    if row.get("status") is None:
        return f"error: {_plain(row.get('error') or 'no answer')}"
    parts = [f"HTTP {row['status']}"]
    parts.append(
        "dns/connect/tls/first byte/total "
        + "/".join(_ms(row.get(k)) for k in ("dns", "connect", "tls", "first_byte", "total"))
        + " ms"
    )
    if isinstance(row.get("cert_expires"), int):
        expires = time.strftime("%Y-%m-%d", time.gmtime(row["cert_expires"]))
        parts.append(f"cert until {expires} by {_plain(row.get('cert_issuer') or '?')}")
    if row.get("body_sha256"):
        parts.append(f"body {_plain(row['body_sha256'])[:12]}")
    return ", ".join(parts)


def _agreement(rows: Sequence[Row]) -> str:
    answered = [row for row in rows if row.get("failed") is None and row.get("status") is not None]
    statuses = sorted({row["status"] for row in answered})
    bodies = {row.get("body_sha256") for row in answered}
    line = f"{len(answered)} of {len(rows)} vantage points answered"
    if len(statuses) > 1:
        line += f"; statuses differ ({', '.join(map(str, statuses))})"
    if len(bodies) > 1:
        line += f"; {len(bodies)} different bodies"
    if answered and len(answered) < len(rows):
        line += "; unreachable from some networks"
    return line


def to_text(rows: Sequence[Row]) -> str:
    by_url: dict[str, list[Row]] = {}
    for row in rows:
        by_url.setdefault(str(row["url"]), []).append(row)
    lines = []
    for url, seen in by_url.items():
        lines.append(f"{_plain(url)}: {_agreement(seen)}")
        for row in sorted(seen, key=lambda r: str(r.get("network") or "~")):
            lines.append(f"  from {_plain(row.get('network') or 'no network')}: {_answer(row)}")
    return "\n".join(lines) + ("\n" if lines else "")
