"""Job models as manifests declare them, and result records checked against them: pure."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from overlay.identity import Identity
from workloads import bundle, records
from workloads.bundle import DEFAULT_MODEL, BundleError, Field, JobModel
from workloads.records import Checker, SchemaError

FINGERPRINT_TOML = """
name = "fingerprint"
version = "1.0.0"
entrypoint = ["python3", "-m", "fingerprint"]
capabilities = ["fetch"]

[job]
input = "urls"
crawl = false

[results.fields]
url = "str"
status = "int?"
length = "int"
sha256 = "str?"
"""
FINGERPRINT = JobModel(
    fields=(Field("url", "str"), Field("status", "int", True), Field("length", "int"), Field("sha256", "str", True))
)


def linkcheck_record(url: str, **changes: Any) -> dict[str, Any]:
    record = {
        "url": url,
        "result": "ok",
        "status": 200,
        "final_url": url,
        "redirects": [],
        "error": None,
        "links": ["http://a.test/b"],
        "crawled": True,  # not declared: dropped
    }
    return {**record, **changes}


def test_a_manifest_declares_its_job_model() -> None:
    manifest = bundle.parse_manifest(FINGERPRINT_TOML)
    assert manifest.job == FINGERPRINT
    assert manifest.model.columns == ("url", "status", "length", "sha256", "failed")
    assert bundle.parse_manifest('name = "x"\nversion = "1"\nentrypoint = ["a"]\n').model == DEFAULT_MODEL
    assert DEFAULT_MODEL.columns == (
        "url",
        *("result", "status", "final_url", "redirects", "error"),
        *("depth", "referrers", "more_referrers", "failed"),
    )


def test_the_job_model_is_signed(tmp_path: Any) -> None:
    key = Identity.generate()
    manifest = bundle.parse_manifest(FINGERPRINT_TOML)
    signed = bundle.sign(manifest, b"a" * 32, {"fingerprint/__main__.py": b"b" * 32}, key)
    again = bundle.decode(bundle.encode(signed))
    assert again == signed
    bundle.verify_manifest(again)
    # Another schema under the same signature is a forgery.
    other = JobModel(fields=(Field("url", "str"), Field("length", "int")))
    forged = bundle.SignedManifest(
        bundle.Manifest(
            manifest.name, manifest.version, manifest.entrypoint, manifest.limits, manifest.capabilities, other
        ),
        signed.archive_sha256,
        signed.files,
        signed.owner_key,
        signed.info_hash,
        signed.signature,
    )
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.verify_manifest(forged)


def test_a_manifest_without_a_job_model_signs_what_it_always_did() -> None:
    """Bundles signed before job models keep verifying: the signed bytes did not change."""
    key = Identity.generate()
    manifest = bundle.parse_manifest('name = "x"\nversion = "1"\nentrypoint = ["a"]\n')
    signed = bundle.sign(manifest, b"a" * 32, {}, key)
    encoded = bundle.decode(bundle.encode(signed))
    assert encoded.manifest.job is None
    old_bytes = bundle.signing._signing_bytes(manifest, b"a" * 32, {}, key.public_key, None)
    from overlay import wire

    assert wire.decode(old_bytes) == [
        bundle.DOMAIN,
        "x",
        "1",
        ["a"],
        [bundle.DEFAULT_LIMITS[k] for k in bundle.DEFAULT_LIMITS],
        [],
        b"a" * 32,
        [],
        key.public_key,
        None,
    ]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('[job]\ninput = "rows"\n[results.fields]\nurl = "str"\n', "job.input must be one of urls"),
        ('[job]\n[results.fields]\nurl = "int"\n', 'results.fields.url = "str" is required'),
        ('[job]\n[results.fields]\nurl = "str"\nx = "dict"\n', "results.fields.x must be one of str, int"),
        ('[job]\ncrawl = true\n[results.fields]\nurl = "str"\n', 'job.crawl needs results.fields.links = "list[str]"'),
        ('[job]\ncount = "n"\n[results.fields]\nurl = "str"\nn = "int"\n', "job.count must name a str field"),
        ('[job]\n[results.fields]\nurl = "str"\nfailed = "str"\n', "results.fields.failed: the name is the platform's"),
        ('[job]\nsplit = "count"\n[results.fields]\nurl = "str"\n', "job has unknown keys: split"),
        ('[job]\nmax_links = 5\n[results.fields]\nurl = "str"\n', "job.max_links needs job.crawl = true"),
        (
            '[job]\ncrawl = true\nmax_links = 0\n[results.fields]\nurl = "str"\nlinks = "list[str]"\n',
            "job.max_links must be a whole number 1..10000",
        ),
        ("[job]\n", "a manifest with [job] needs [results.fields]"),
        ('[results.fields]\nurl = "str"\n', "job must be a table"),
    ],
)
def test_bad_job_models(tables: str, message: str) -> None:
    with pytest.raises(BundleError) as info:
        bundle.parse_manifest('name = "x"\nversion = "1"\nentrypoint = ["a"]\n' + tables)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_records_of_the_link_checker() -> None:
    checker = Checker(DEFAULT_MODEL)
    (record,) = checker.records({"items": [linkcheck_record("http://a.test/", redirects=["http://a.test/old"])]})
    assert record == records.Record(
        url="http://a.test/",
        values=["ok", 200, "http://a.test/", ["http://a.test/old"], None],
        counted_as="ok",
        links=["http://a.test/b"],
        links_at="http://a.test/",
    )


def test_records_of_a_workload_without_crawls() -> None:
    checker = Checker(FINGERPRINT)
    raw = {"url": "http://a.test/", "status": 200, "length": 5, "sha256": "ab", "extra": "dropped"}
    (record,) = checker.records({"items": [raw]})
    assert record == records.Record("http://a.test/", [200, 5, "ab"], None, [], None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"url": "http://a.test/", "status": 200, "length": "5", "sha256": None},
            "payload.items[0].length must be int",
        ),
        (
            {"url": "http://a.test/", "status": True, "length": 5, "sha256": None},
            "payload.items[0].status must be int or nil",
        ),
        ({"url": "http://a.test/", "status": 200, "sha256": None}, "payload.items[0].length is missing"),
        (
            {"url": "http://a.test/", "status": 200, "length": None, "sha256": None},
            "payload.items[0].length must not be nil",
        ),
        (
            {"url": "http://a.test/", "status": 200, "length": 1, "sha256": "x" * 8193},
            "payload.items[0].sha256 is longer than 8192 characters",
        ),
        ([1], "payload.items[0] must be a map"),
    ],
)
def test_records_that_break_the_schema(raw: Any, message: str) -> None:
    payload = {"items": raw if isinstance(raw, list) else [raw]}
    with pytest.raises(SchemaError) as info:
        Checker(FINGERPRINT).records(payload)
    assert str(info.value) == message


def test_lists_and_records_are_capped() -> None:
    checker = Checker(DEFAULT_MODEL)
    with pytest.raises(SchemaError, match=r"^payload.items\[0\].links has more than 10000 entries$"):
        checker.records({"items": [linkcheck_record("http://a.test/", links=["x"] * 10_001)]})
    with pytest.raises(SchemaError, match=r"^payload.items\[0\].redirects must be list\[str\]$"):
        checker.records({"items": [linkcheck_record("http://a.test/", redirects=["a", None])]})
    with pytest.raises(SchemaError, match=r"^payload.items\[0\] is larger than 1048576 bytes$"):
        checker.records({"items": [linkcheck_record("http://a.test/", links=["y" * 8000] * 200)]})
    payload: Any
    for payload in ({"items": {}}, [], None):
        with pytest.raises(SchemaError, match="^payload must be a map with a list 'items'$"):
            checker.records(payload)


def test_records_must_be_the_units_items() -> None:
    checker = Checker(DEFAULT_MODEL)
    two = checker.records({"items": [linkcheck_record("http://a.test/"), linkcheck_record("http://a.test/")]})
    with pytest.raises(SchemaError, match=r"^payload.items\[1\].url is reported twice$"):
        records.check_unit_items(two, {"http://a.test/": 1})
    with pytest.raises(SchemaError, match=r"^payload.items\[0\].url is not an item of this unit$"):
        records.check_unit_items(two, {"http://b.test/": 1})


def test_json_lines_and_csv_follow_the_schema() -> None:
    rows: list[dict[str, Any]] = [
        {"url": "http://a.test/", "status": 200, "length": 5, "sha256": "ab", "failed": None, "done": True},
        {"url": "http://a.test/=x", "status": None, "length": 0, "sha256": None, "failed": "gave up", "done": True},
    ]
    columns = FINGERPRINT.columns
    assert records.to_json_lines(rows, columns) == (
        '{"url": "http://a.test/", "status": 200, "length": 5, "sha256": "ab", "failed": null}\n'
        '{"url": "http://a.test/=x", "status": null, "length": 0, "sha256": null, "failed": "gave up"}\n'
    )
    assert records.to_csv([{"url": "=cmd()", "status": 1, "length": 2, "sha256": "a\nb", "failed": None}], columns) == (
        'url,status,length,sha256,failed\r\n\'=cmd(),1,2,"a\nb",\r\n'
    )
    assert records.to_csv([{"url": "u", "flag": True, "tags": ["a", "b"]}], ["url", "flag", "tags"]) == (
        "url,flag,tags\r\nu,true,a b\r\n"
    )


def test_the_api_version_and_vantage_points_are_signed() -> None:
    key = Identity.generate()
    toml = FINGERPRINT_TOML.replace("[job]\n", "api_version = 2\n[job]\nvantage = true\n")
    manifest = bundle.parse_manifest(toml)
    assert manifest.api_version == 2 and manifest.model.vantage
    assert manifest.model.columns[:2] == ("url", "network")
    signed = bundle.sign(manifest, b"a" * 32, {"fingerprint/__main__.py": b"b" * 32}, key)
    again = bundle.decode(bundle.encode(signed))
    assert again == signed
    bundle.verify_manifest(again)
    for changed in (
        dataclasses.replace(manifest, api_version=1),  # a version 2 workload passed off as a version 1
        dataclasses.replace(manifest, job=dataclasses.replace(manifest.model, vantage=False)),
    ):
        with pytest.raises(BundleError, match="signature does not match"):
            bundle.verify_manifest(dataclasses.replace(signed, manifest=changed))


def test_links_past_the_declared_limit_are_dropped_and_the_limit_is_signed() -> None:
    """A peer that makes links up adds at most what the workload declared (issue 21: a liar
    injected 10,000 links per page)."""
    model = dataclasses.replace(DEFAULT_MODEL, max_links=3)
    raw = linkcheck_record("http://a.test/") | {"links": [f"http://a.test/{i}" for i in range(10_000)]}
    (record,) = Checker(model).records({"items": [raw]})
    assert record.links == ["http://a.test/0", "http://a.test/1", "http://a.test/2"]
    assert len(Checker(DEFAULT_MODEL).records({"items": [raw]})[0].links) == 10_000  # the platform's cap
    # The built-in link checker declares its limit, and its signature covers it.
    from workloads.builtin import BUILTINS
    from workloads.linkcheck.check import MAX_LINKS_PER_PAGE

    toml = 'name = "x"\nversion = "1"\nentrypoint = ["a"]\n' + BUILTINS["linkcheck"].job_model
    manifest = bundle.parse_manifest(toml)
    assert manifest.model.max_links == MAX_LINKS_PER_PAGE
    assert bundle.model_from_obj(manifest.model.to_obj()) == manifest.model
    key = Identity.generate()
    signed = bundle.sign(manifest, b"a" * 32, {}, key)
    bundle.verify_manifest(signed)
    lifted = dataclasses.replace(manifest, job=dataclasses.replace(manifest.model, max_links=10_000))
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.verify_manifest(dataclasses.replace(signed, manifest=lifted))
