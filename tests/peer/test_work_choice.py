"""Whom the volunteer works for: the rules a change follows, and the file it is kept in."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.work_choice import WorkChoice, WorkChoiceError, changed, load, save

BY_URL = WorkChoice(coordinator="http://a.test:8700")
BY_NETWORK = WorkChoice(network="public")


def test_a_peer_started_with_a_url_changes_its_url_and_a_dht_peer_its_network() -> None:
    assert changed(BY_URL, {"coordinator": " http://b.test:8700/ "}, by_url=True) == WorkChoice("http://b.test:8700")
    assert changed(BY_NETWORK, {"network": "lab", "prefer": "https://c.test"}, by_url=False) == WorkChoice(
        None, "lab", "https://c.test"
    )
    assert changed(WorkChoice(network="lab", prefer="https://c.test"), {"prefer": ""}, by_url=False) == WorkChoice(
        network="lab"
    )
    with pytest.raises(WorkChoiceError, match="works for one coordinator by its URL: network cannot be set"):
        changed(BY_URL, {"network": "lab"}, by_url=True)
    with pytest.raises(WorkChoiceError, match="finds coordinators in the DHT: coordinator cannot be set"):
        changed(BY_NETWORK, {"coordinator": "http://b.test"}, by_url=False)


@pytest.mark.parametrize(
    "form, by_url, words",
    [
        ({"coordinator": "ftp://b.test"}, True, "is not an http(s) URL"),
        ({"coordinator": "b.test"}, True, "is not an http(s) URL"),
        ({"coordinator": "http://b.test/?x=1"}, True, "is not an http(s) URL"),
        ({"coordinator": "http://b.test/\nx"}, True, "printable"),
        ({"coordinator": 5}, True, "must be an http(s) URL"),
        ({"coordinator": "http://" + "b" * 3000}, True, "at most 2000"),
        ({"network": "Lab Net"}, False, "must be 1-64 of a-z"),
        ({"network": None}, False, "must be 1-64 of a-z"),
        ({"prefer": "javascript:alert(1)"}, False, "preferred coordinator"),
        (["coordinator"], True, "the form is a map"),
    ],
)
def test_bad_forms_are_refused_with_one_line(form: object, by_url: bool, words: str) -> None:
    with pytest.raises(WorkChoiceError) as refused:
        changed(BY_URL if by_url else BY_NETWORK, form, by_url=by_url)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_the_choice_is_kept_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "osaas" / "work.toml"
    assert load(path) == WorkChoice()
    odd = changed(BY_NETWORK, {"network": "lab", "prefer": 'https://c.test/"x"\\y'}, by_url=False)
    for choice in (WorkChoice("http://a.test:8700"), odd):
        save(path, choice)
        assert load(path) == choice
    path.write_text('network = "lab"\ncolour = "blue"\n')
    with pytest.raises(WorkChoiceError, match="unknown key 'colour'"):
        load(path)
    path.write_text("network = \n")
    with pytest.raises(WorkChoiceError, match=str(path)):
        load(path)
    path.write_text('network = "Not Valid"\n')
    with pytest.raises(WorkChoiceError, match="must be 1-64"):
        load(path)
