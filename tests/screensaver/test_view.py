"""The screensaver's view model: every figure it shows comes from the status document, and no
document, however odd, stops it (the drawing code paints whatever scene it gets)."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pygame
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.status import to_json
from screensaver.draw import Painter
from screensaver.view import RECENT_SHOWN, CheckedLine, scene_of
from tests.peer.test_status import a_status

URL = "http://127.0.0.1:8701/status"


def test_the_scene_takes_its_figures_from_the_document() -> None:
    document = to_json(a_status())
    scene = scene_of(document, URL)
    assert (scene.running, scene.name, scene.state) == (True, "kitchen", "working")
    assert scene.headline == "checking 1 unit for http://coordinator.test:8700"
    assert (scene.ok, scene.broken, scene.units_done, scene.units_failed) == (70, 10, 4, 1)
    assert scene.hosts == ("http://a.test:80",)
    assert scene.coordinator == "http://coordinator.test:8700"
    # Newest first, the status code when there was an answer.
    assert scene.checked == (
        CheckedLine("http://a.test/gone", "404", "bad"),
        CheckedLine("http://a.test/", "200", "good"),
    )
    download, upload, used = scene.gauges
    assert (download.value, download.limit, download.fraction, download.text) == (
        250_000,
        1_000_000,
        0.25,
        "250 kB/s of 1 MB/s",
    )
    assert (upload.limit, upload.fraction, upload.text) == (None, None, "0 B/s (no limit)")
    assert (used.label, used.value, used.limit, used.text) == (
        "used this day",
        1_500_000,
        2_000_000_000,
        "1.5 MB of 2 GB",
    )


def test_a_paused_peer_says_why_and_no_peer_says_how_to_start_one() -> None:
    paused = scene_of(to_json(a_status(state="paused", paused="outside active hours (08:00-18:00)", units=())), URL)
    assert (paused.headline, paused.detail, paused.hosts) == ("paused", "outside active hours (08:00-18:00)", ())
    missing = scene_of(None, URL)
    assert (missing.running, missing.headline) == (False, "peer not running")
    assert missing.detail is not None and URL in missing.detail and "osaas peer run" in missing.detail


def test_the_list_of_checked_urls_is_bounded() -> None:
    recent = [{"url": f"http://a.test/{n}", "result": "timeout", "status": None, "at": n} for n in range(200)]
    scene = scene_of({"recent": recent}, URL)
    assert len(scene.checked) == RECENT_SHOWN
    assert scene.checked[0] == CheckedLine("http://a.test/199", "timeout", "warn")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
keys = st.sampled_from(["name", "state", "paused", "coordinator", "units", "budget", "usage", "totals", "recent"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, json_values))
def test_any_document_gives_a_scene_that_draws(document: dict) -> None:
    scene = scene_of(document, URL)
    assert scene.running
    assert all(0 <= g.value and (g.fraction is None or 0 <= g.fraction <= 1) for g in scene.gauges)
    surface = pygame.Surface((320, 200))
    Painter((320, 200)).draw(surface, scene, 12.5)


def test_a_nul_anywhere_in_the_document_still_draws() -> None:
    # SDL_ttf refuses text holding a NUL; hypothesis found it in a peer's name.
    document = to_json(a_status())
    document["name"] = "kit\0chen"
    document["paused"] = "held\0 by a test"
    document["recent"][0]["url"] = "http://a.test/\0"
    surface = pygame.Surface((640, 360))
    Painter((640, 360)).draw(surface, scene_of(document, URL), 1.0)
    assert scene_of(document, URL).name == "kit\0chen"  # the scene keeps what the peer said


def test_the_network_comes_from_the_dht_and_the_bundles_seeded() -> None:
    scene = scene_of(to_json(a_status()), URL)
    assert scene.neighbours == ("10.0.0.2:4000", "10.0.0.3:4000")
    assert [(s.label, s.peers) for s in scene.swarms] == [("linkcheck 0.1.0", 3)]
    assert scene_of(to_json(a_status(dht_neighbours=None, bundles=())), URL).neighbours is None
