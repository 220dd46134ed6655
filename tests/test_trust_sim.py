"""bench/trust_sim on a small swarm: the trust rules beat believing every answer, and catch the
liars they can see."""

from __future__ import annotations

from bench import trust_sim


def test_a_small_run_catches_liars_and_is_far_more_right_than_the_anchor() -> None:
    sim = trust_sim.Sim(trust_sim.options(["--items", "60000", "--peers", "200", "--drain", "20", "--sybil", "20"]))
    sim.run()
    lies, _ = sim.wrong()
    anchor_lies, _ = sim.anchor_wrong
    assert anchor_lies > 1000 and lies * 20 < anchor_lies
    keys = [p for p in sim.peers if p.joined < sim.ticks]
    forged = [p for p in keys if p.kind == trust_sim.VERSION and p.units >= 3]
    assert forged and all(p.quarantined_at is not None for p in forged)  # refused three times: quarantined
    honest = (trust_sim.HONEST, trust_sim.INFLATED, trust_sim.LINKS, trust_sim.DELAY)
    assert not [p for p in sim.peers if p.kind in honest and p.quarantined_at is not None]
    assert sum(sim.fetch.values()) > sim.n  # replication and known answers cost fetches
