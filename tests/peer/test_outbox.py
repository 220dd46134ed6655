from __future__ import annotations

import random

from overlay import wire
from peer.backoff import backoff_delay
from peer.outbox import Outbox


def test_outbox_keeps_reports_across_instances(tmp_path):
    report = wire.Report(unit_id=7, token=3, exit_code=0, payload={"items": []})
    Outbox(tmp_path).put("http://c:1", report)
    pending = Outbox(tmp_path).pending()
    assert [(p.coordinator, p.report) for p in pending] == [("http://c:1", report)]
    Outbox(tmp_path).remove(pending[0])
    assert Outbox(tmp_path).pending() == []


def test_corrupt_outbox_entry_is_set_aside_not_fatal(tmp_path):
    outbox = Outbox(tmp_path)
    good = wire.Report(unit_id=1, token=1, exit_code=2, error="boom")
    outbox.put("http://c:1", good)
    (tmp_path / "zz-9-9.report").write_bytes(b"\xc1garbage")
    assert [p.report for p in outbox.pending()] == [good]
    assert (tmp_path / "zz-9-9.bad").exists()


def test_backoff_grows_is_jittered_capped_and_honours_retry_after():
    rng = random.Random(1)
    delays = [backoff_delay(n, base=0.5, cap=30.0, rng=rng) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)
    assert backoff_delay(0, retry_after=7.0, rng=rng) == 7.0
    assert backoff_delay(0, retry_after=10_000, cap=30.0, rng=rng) == 120.0
