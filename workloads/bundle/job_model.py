"""A workload's job model, as its manifest declares it (`[job]` and `[results.fields]`): what
its jobs take, whether its units add items, and the schema of its result records.

    [job]
    input = "urls"        # seed URLs, split by website (the politeness unit); or "items"
                          # (a list of strings), "records" (a file of JSON objects)
    partition = "website" # optional: how the input is split; "count" for items and records
    crawl = true          # units add items: each record's `links` (list[str]) names them
    count = "result"      # optional: job status counts records by this str field
    links_at = "final_url"  # optional, crawl only: the field naming the page the links are on
    vantage = true        # optional: every URL is done by K peers in different networks
    agree = ["result"]    # optional: the fields two peers' answers of an item must agree on;
                          # without it answers are never checked against each other
    problems = ["broken", "timeout", "error"]  # optional: values of the count field that
                          # are never final on one answer (another peer checks them again)
    unreached = ["timeout", "error"]  # optional: values of the count field that say the
                          # website was not reached (a link down from one network, no lie)

    [results.fields]
    url = "str"           # every record names its item
    result = "str"
    status = "int?"       # "?": nil allowed
    links = "list[str]"

Jobs of `input = "urls"` split by website; jobs of "items" and "records" split by count
(`partition = "count"`, many parts so that several peers work at once) and their records name
their item with `item = "str"` instead of `url` (`JobModel.key`). A manifest without
`[job]` means what every manifest meant before job models: the link checker's
(`DEFAULT_MODEL`), so bundles built before keep running and keep their signatures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from overlay.errors import OsaasError

INPUTS = ("urls", "items", "records")
# How each kind of input is split into units: the one partition it may declare.
PARTITIONS = {"urls": "website", "items": "count", "records": "count"}
ITEM_FIELD = "item"  # what a record of an items or records job names its item by
KINDS = ("str", "int", "float", "bool", "list[str]")
MAX_FIELDS = 64
# Names the results rows use for what the platform adds beside a record.
RESERVED = frozenset({"depth", "referrers", "more_referrers", "failed", "network", "verdict", "answers"})
URL_FIELD = "url"
LINKS_FIELD = "links"
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_JOB_KEYS = frozenset(
    {"input", "partition", "crawl", "count", "links_at", "vantage", "max_links", "agree", "problems", "unreached"}
)
_CHECK_KEYS = ("agree", "problems", "unreached")  # what a model says of comparing answers
MAX_VALUES = 32  # values a model may list as problems or as unreached
MAX_LINKS = 10_000  # links a crawled page's record may add, at most; a model may declare fewer


class ModelError(OsaasError):
    """A `[job]` or `[results]` table that does not declare a job model we can run."""

    code = "invalid_bundle"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ModelError(message)


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # one of KINDS
    nullable: bool = False

    @property
    def type_name(self) -> str:
        return self.kind + ("?" if self.nullable else "")


@dataclass(frozen=True, slots=True)
class JobModel:
    """Validated on construction; `fields` in the order the manifest lists them."""

    fields: tuple[Field, ...]
    input: str = "urls"
    crawl: bool = False
    count: str | None = None
    links_at: str | None = None
    # Every item is done once from each of K vantage points (peers in different networks, K
    # the job's); its results row per vantage point names the network it came from.
    vantage: bool = False
    # A crawl's links per record, at most (None: MAX_LINKS): what a record reports past it is
    # dropped, so a peer that makes links up adds a bounded number of items.
    max_links: int | None = None
    # Answers are compared by these fields (`coordinator.verdicts`); empty: never compared.
    agree: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # values of `count` never final on one answer
    unreached: tuple[str, ...] = ()  # values of `count` that say the website was not reached

    def __post_init__(self) -> None:
        _require(self.input in INPUTS, f"job.input must be one of {', '.join(INPUTS)}")
        if self.input != "urls":
            _require(not self.crawl, f'job.crawl needs input = "urls" (not "{self.input}")')
            _require(not self.vantage, f'job.vantage needs input = "urls" (not "{self.input}")')
        _require(type(self.crawl) is bool, "job.crawl must be true or false")
        _require(type(self.vantage) is bool, "job.vantage must be true or false")
        _require(not (self.vantage and self.crawl), "job.vantage and job.crawl cannot both be true")
        _require(0 < len(self.fields) <= MAX_FIELDS, f"results.fields must declare 1..{MAX_FIELDS} fields")
        names = [f.name for f in self.fields]
        _require(len(set(names)) == len(names), "results.fields has a field twice")
        for f in self.fields:
            _require(_NAME_RE.fullmatch(f.name) is not None, f"results.fields.{f.name}: names are a-z, 0-9 and '_'")
            _require(f.name not in RESERVED, f"results.fields.{f.name}: the name is the platform's")
            _require(f.kind in KINDS, f'results.fields.{f.name} must be one of {", ".join(KINDS)} ("?" for nil)')
        by_name = {f.name: f for f in self.fields}
        _require(by_name.get(self.key) == Field(self.key, "str"), f'results.fields.{self.key} = "str" is required')
        if self.crawl:
            _require(
                by_name.get(LINKS_FIELD) == Field(LINKS_FIELD, "list[str]"),
                'job.crawl needs results.fields.links = "list[str]"',
            )
        if self.count is not None:
            _require(
                self.count in by_name and by_name[self.count].kind == "str" and self.count != self.key,
                f"job.count must name a str field other than {self.key}",
            )
        if self.max_links is not None:
            _require(self.crawl, "job.max_links needs job.crawl = true")
            _require(
                type(self.max_links) is int and 0 < self.max_links <= MAX_LINKS,
                f"job.max_links must be a whole number 1..{MAX_LINKS}",
            )
        self._check_agreement(by_name)
        if self.links_at is not None:
            _require(self.crawl, "job.links_at needs job.crawl = true")
            _require(
                self.links_at in by_name and by_name[self.links_at].kind == "str",
                "job.links_at must name a str field",
            )

    def _check_agreement(self, by_name: Mapping[str, Field]) -> None:
        for name in _CHECK_KEYS:
            values = getattr(self, name)
            _require(
                type(values) is tuple and len(values) <= MAX_VALUES and all(type(v) is str for v in values),
                f"job.{name} must be a list of at most {MAX_VALUES} names",
            )
            _require(len(set(values)) == len(values), f"job.{name} names a value twice")
        for name in self.agree:
            _require(
                name in by_name and name not in (self.key, LINKS_FIELD),
                f"job.agree: {name!r} is not a field of results.fields (other than {self.key} and links)",
            )
        if self.problems or self.unreached:
            _require(bool(self.agree), "job.problems and job.unreached need job.agree")
            _require(self.count is not None, "job.problems and job.unreached name values of job.count: set it")
        _require(not (self.agree and self.vantage), "job.agree and job.vantage cannot both be set")

    @property
    def checked(self) -> bool:
        """Are its answers compared (re-checked by other peers)?"""
        return bool(self.agree)

    @property
    def key(self) -> str:
        """The field a record names its item by: `url` for seed URLs, else `item`."""
        return URL_FIELD if self.input == "urls" else ITEM_FIELD

    @property
    def split(self) -> str:
        """How its jobs' input is split into units: "website" or "count"."""
        return PARTITIONS[self.input]

    @property
    def links_limit(self) -> int:
        """The links a record may add, at most (`max_links`)."""
        return MAX_LINKS if self.max_links is None else self.max_links

    @property
    def stored(self) -> tuple[Field, ...]:
        """The fields kept per item: all but the item's key and the links (new items)."""
        left_out = {self.key, LINKS_FIELD} if self.crawl else {self.key}
        return tuple(f for f in self.fields if f.name not in left_out)

    @property
    def columns(self) -> tuple[str, ...]:
        """A results row's keys, in order: the record's, then the platform's."""
        platform = ("depth", "referrers", "more_referrers", "failed") if self.crawl else ("failed",)
        where = ("network",) if self.vantage else ()
        checked = ("verdict", "answers") if self.agree else ()
        return (self.key, *where, *(f.name for f in self.stored), *platform, *checked)

    def to_obj(self) -> dict[str, Any]:
        """The model as a map (a signed manifest's, a job's row): fields as [name, type] pairs
        so their order holds in any encoding."""
        obj = {
            "input": self.input,
            "crawl": self.crawl,
            "count": self.count,
            "links_at": self.links_at,
            "fields": [[f.name, f.type_name] for f in self.fields],
        }
        if self.input != "urls":  # kinds newer than models of seed URLs: the partition is named
            obj["partition"] = self.split
        obj |= {"vantage": True} if self.vantage else {}
        return obj | self._extras()

    def _extras(self) -> dict[str, Any]:
        """What models since max_links declare, when they declare it: a map, so a model
        without them keeps the bytes (and signatures) it had."""
        extras: dict[str, Any] = {} if self.max_links is None else {"max_links": self.max_links}
        return extras | {name: list(getattr(self, name)) for name in _CHECK_KEYS if getattr(self, name)}

    def signed_part(self) -> list[Any]:
        """The model in the bytes a manifest's signature covers: a list in a fixed order (a
        model without vantage points signs what models signed before them; one of items or
        records, never of vantage points, signs its partition last)."""
        part = [self.input, self.crawl, self.count, self.links_at, [[f.name, f.type_name] for f in self.fields]]
        if self.input != "urls":
            return [*part, self.split]
        part += [True] if self.vantage else []
        extras = self._extras()
        return part + ([extras] if extras else [])


def parse_type(name: str, text: object) -> Field:
    _require(isinstance(text, str), f'results.fields.{name} must be a type name like "int" or "str?"')
    assert isinstance(text, str)
    nullable = text.endswith("?")
    return Field(name, text[:-1] if nullable else text, nullable)


def from_toml(job: object, results: object) -> JobModel:
    """The model of a manifest's `[job]` and `[results]` tables (TOML keeps their order)."""
    _require(isinstance(job, dict), "job must be a table")
    _require(isinstance(results, dict), "a manifest with [job] needs [results.fields]")
    assert isinstance(job, dict) and isinstance(results, dict)
    unknown = sorted(set(results) - {"fields"})
    _require(not unknown, f"results has unknown keys: {', '.join(unknown)}")
    fields = results.get("fields")
    _require(isinstance(fields, dict), 'results.fields must be a table of name = "type"')
    assert isinstance(fields, dict)
    _require(len(fields) <= MAX_FIELDS, f"results.fields must declare 1..{MAX_FIELDS} fields")
    return _model(job, [parse_type(str(name), kind) for name, kind in fields.items()])


def from_obj(obj: object) -> JobModel:
    """The model of `to_obj`'s map (a signed manifest, a job's row)."""
    _require(isinstance(obj, dict), "job model must be a map")
    assert isinstance(obj, dict)
    pairs = obj.get("fields")
    _require(isinstance(pairs, list) and len(pairs) <= MAX_FIELDS, "job model fields must be a list")
    assert isinstance(pairs, list)
    fields = []
    for pair in pairs:
        _require(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str), "bad job model field")
        fields.append(parse_type(pair[0], pair[1]))
    return _model({k: v for k, v in obj.items() if k != "fields"}, fields)


def _model(job: Mapping[str, Any], fields: list[Field]) -> JobModel:
    unknown = sorted(set(job) - _JOB_KEYS)
    _require(not unknown, f"job has unknown keys: {', '.join(map(str, unknown))}")
    for key in ("count", "links_at"):
        _require(job.get(key) is None or isinstance(job[key], str), f"job.{key} must name a field")
    _require(isinstance(job.get("input", "urls"), str), "job.input must be a word")
    kind = job.get("input", "urls")
    if job.get("partition") is not None and kind in PARTITIONS:  # each kind has the one partition
        _require(
            job["partition"] == PARTITIONS[kind], f'job.partition of input = "{kind}" must be "{PARTITIONS[kind]}"'
        )
    return JobModel(
        fields=tuple(fields),
        input=job.get("input", "urls"),
        crawl=job.get("crawl", False),
        count=job.get("count"),
        links_at=job.get("links_at"),
        vantage=job.get("vantage", False),
        max_links=job.get("max_links"),
        **{name: _names(job.get(name, ()), name) for name in _CHECK_KEYS},
    )


def _names(value: object, key: str) -> tuple[str, ...]:
    _require(isinstance(value, list | tuple), f"job.{key} must be a list of names")
    assert isinstance(value, list | tuple)
    return tuple(value)


# What a manifest without [job] means: the link checker's records as it reported them before
# job models (docs/workload-api.md), `crawled` left out (its links are empty when not crawled).
DEFAULT_MODEL = JobModel(
    fields=(
        Field("url", "str"),
        Field("result", "str"),
        Field("status", "int", True),
        Field("final_url", "str", True),
        Field("redirects", "list[str]"),
        Field("error", "str", True),
        Field("links", "list[str]"),
    ),
    crawl=True,
    count="result",
    links_at="final_url",
)
