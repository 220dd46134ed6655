"""Job models of items and records: what a manifest may declare, how their records are checked
(named by `item`), and that models of seed URLs sign and read as they did."""

from __future__ import annotations

import dataclasses

import pytest

from overlay.identity import Identity
from workloads import bundle
from workloads.bundle import DEFAULT_MODEL, BundleError
from workloads.records import Checker, SchemaError, check_unit_items

HEAD = 'name = "x"\nversion = "1"\nentrypoint = ["a"]\n'
ITEMS = '[job]\ninput = "items"\npartition = "count"\n[results.fields]\nitem = "str"\nupper = "str"\n'


def test_an_items_model_names_its_records_by_item() -> None:
    model = bundle.parse_manifest(HEAD + ITEMS).model
    assert (model.input, model.split, model.key) == ("items", "count", "item")
    assert model.columns == ("item", "upper", "failed")
    assert bundle.parse_manifest(HEAD + ITEMS.replace('partition = "count"\n', "")).model == model
    records = Checker(model).records({"items": [{"item": "a b", "upper": "A B", "extra": 1}]})
    assert [(r.url, r.values) for r in records] == [("a b", ["A B"])]
    check_unit_items(records, {"a b": 1}, model.key)
    with pytest.raises(SchemaError, match=r"^payload.items\[0\].item is not an item of this unit$"):
        check_unit_items(records, {"other": 1}, model.key)
    with pytest.raises(SchemaError, match=r"^payload.items\[0\].item is missing$"):
        Checker(model).records({"items": [{"url": "a b", "upper": "A B"}]})


def test_models_of_items_and_records_are_signed_with_their_partition() -> None:
    key = Identity.generate()
    for kind in ("items", "records"):
        manifest = bundle.parse_manifest(HEAD + ITEMS.replace('"items"', f'"{kind}"'))
        assert manifest.model.signed_part()[0] == kind and manifest.model.signed_part()[-1] == "count"
        assert manifest.model.to_obj()["partition"] == "count"
        signed = bundle.sign(manifest, b"a" * 32, {}, key)
        again = bundle.decode(bundle.encode(signed))
        assert again == signed
        bundle.verify_manifest(again)
        other = dataclasses.replace(manifest.model, input="records" if kind == "items" else "items")
        with pytest.raises(BundleError, match="signature does not match"):
            bundle.verify_manifest(dataclasses.replace(signed, manifest=dataclasses.replace(manifest, job=other)))


def test_models_of_urls_are_what_they_were() -> None:
    """A urls model says nothing of its partition where it is stored or signed, so bundles and
    jobs from before keep their bytes; `partition = "website"` may be said and changes nothing."""
    assert DEFAULT_MODEL.key == "url" and DEFAULT_MODEL.split == "website"
    assert "partition" not in DEFAULT_MODEL.to_obj()
    assert len(DEFAULT_MODEL.signed_part()) == 5
    urls = '[job]\ninput = "urls"\n[results.fields]\nurl = "str"\nitem = "str"\n'
    plain = bundle.parse_manifest(HEAD + urls).model
    said = bundle.parse_manifest(HEAD + urls.replace("[results", 'partition = "website"\n[results')).model
    assert plain == said and plain.columns == ("url", "item", "failed")  # `item` is a field like any other there


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (ITEMS.replace('partition = "count"', 'partition = "website"'), 'job.partition of input = "items" must be "count"'),
        ('[job]\npartition = "count"\n[results.fields]\nurl = "str"\n', 'job.partition of input = "urls" must be "website"'),
        (ITEMS.replace('partition = "count"', "partition = 3"), 'job.partition of input = "items" must be "count"'),
        (ITEMS.replace('item = "str"', 'url = "str"'), 'results.fields.item = "str" is required'),
        (ITEMS.replace('item = "str"', 'item = "int"'), 'results.fields.item = "str" is required'),
        (ITEMS.replace("[results", "crawl = true\n[results") + 'links = "list[str]"\n', 'job.crawl needs input = "urls"'),
        (ITEMS.replace("[results", "vantage = true\n[results"), 'job.vantage needs input = "urls" (not "items")'),
        (ITEMS.replace("[results", 'count = "item"\n[results'), "job.count must name a str field other than item"),
        (ITEMS.replace('"items"', '"rows"'), "job.input must be one of urls, items, records"),
    ],
)  # fmt: skip
def test_bad_models_of_items(tables: str, message: str) -> None:
    with pytest.raises(BundleError) as info:
        bundle.parse_manifest(HEAD + tables)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
