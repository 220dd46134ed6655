"""`python -m workloads.probe`: the I/O shell that probes one unit's URLs.

Speaks process API version 2: reads the unit, asks the peer for each URL in turn (one at a
time, so that one fetch's timings are not another's queueing), makes a record of each answer
(`measure.record`) and streams it to the peer at once (an `item` frame, which the volunteer's
page counts as progress too), then writes the result and exits with its status. After a
`limit` answer it stops there (exit 1). Opens no sockets; logs to stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO

from workloads.probe.measure import BadPayload, record, unit_urls
from workloads.process_api import (
    ExitCode,
    FetchError,
    FetchRequest,
    FetchResult,
    ItemStream,
    ProtocolError,
    Result,
    Unit,
    answer_unit,
    encode_frame,
    read_frame_blocking,
)

API_VERSION = 2

log = logging.getLogger("workloads.probe")


def _read(stdin: BinaryIO, kind: str) -> dict[str, Any]:
    frame = read_frame_blocking(stdin)
    if frame is None:
        raise ProtocolError(f"stdin ended while waiting for a {kind} frame")
    if frame["type"] != kind:
        raise ProtocolError(f"expected a {kind} frame, got {frame['type']!r}")
    return frame


def _run_unit(stdin: BinaryIO, stdout: BinaryIO) -> Result:
    unit = Unit.from_frame(_read(stdin, "unit"))
    if unit.version != API_VERSION:
        raise ProtocolError(f"process API version {unit.version} is not supported (want {API_VERSION})")
    try:
        urls = unit_urls(unit.payload)
    except BadPayload as exc:
        log.error("bad input: %s", exc)
        return Result(ExitCode.BAD_INPUT, {"items": []}, f"bad input: {exc}")
    log.info("unit %d: %d URLs", unit.unit_id, len(urls))
    stream = ItemStream(unit.version)
    for fetch_id, url in enumerate(urls, 1):
        stdout.write(encode_frame(FetchRequest(fetch_id, "GET", url, want_body=True).to_frame()))
        stdout.flush()
        answer = FetchResult.from_frame(_read(stdin, "fetch_result"))
        if answer.id != fetch_id:
            raise ProtocolError(f"fetch_result for id {answer.id}, expected {fetch_id}")
        if answer.error == FetchError.LIMIT:
            left = len(urls) - stream.done
            log.warning("%d of %d URLs left unprobed: the peer's fetch allowance ran out", left, len(urls))
            return stream.result(ExitCode.PARTIAL, f"{left} URLs left unprobed: fetch allowance used up")
        stdout.write(stream.add(record(url, answer)))
        stdout.flush()
    return stream.result(ExitCode.OK)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    return answer_unit(lambda: _run_unit(stdin, stdout), stdout, log)


if __name__ == "__main__":
    sys.exit(main())
