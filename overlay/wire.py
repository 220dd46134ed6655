"""The peer <-> coordinator wire: msgpack bodies, signed requests, typed messages.

Bytes become objects in exactly one place, `parse()`, which validates every field against
the message dataclass and raises `WireError` with a one-line reason. Every string is capped:
at MAX_STRING characters unless its field says otherwise (`Capped`, e.g. `Name`, `Text`,
`Url`), strings inside lists too, so that no field can carry more than its purpose needs into
the coordinator's memory and database. Requests are signed with the sender's Ed25519 key over
method, path, timestamp and the body's SHA-256.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import secrets
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import msgpack

from overlay.errors import OsaasError
from overlay.identity import Identity, verify

CONTENT_TYPE = "application/msgpack"
KEY_HEADER = "X-Osaas-Key"
SIGNATURE_HEADER = "X-Osaas-Signature"
TIMESTAMP_HEADER = "X-Osaas-Timestamp"
NONCE_HEADER = "X-Osaas-Nonce"
AUDIENCE_HEADER = "X-Osaas-Audience"
SIGNATURE_VERSION = "osaas-v2"  # v2 signs the audience and a nonce: no replay, not elsewhere
NONCE_BYTES = 16
# A signed request is good this long either side of the coordinator's clock; the coordinator
# remembers every nonce it saw for as long, so a request is taken once.
MAX_CLOCK_SKEW = 60.0
MAX_BODY = 8 * 1024 * 1024


class WireError(OsaasError):
    """The other side sent something malformed: bad msgpack, wrong types, bad signature."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code
        self.http_status = 401 if code in ("unsigned", "bad_signature", "wrong_audience", "replayed") else 400


# ---- msgpack ---------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise WireError(f"body is not valid msgpack ({type(exc).__name__})") from exc


def error_body(code: str, message: str) -> bytes:
    return encode({"error": {"code": code, "message": message}})


# ---- signatures ------------------------------------------------------------------------


def _signed_bytes(method: str, path: str, audience: str, timestamp: str, nonce: str, body_sha256: str) -> bytes:
    return "\n".join([SIGNATURE_VERSION, method.upper(), path, audience, timestamp, nonce, body_sha256]).encode()


class SignedRequest(typing.NamedTuple):
    """Who signed a request, for which coordinator, when, and its one-time nonce."""

    signer: str  # the signer's public key, hex (a peer's id, an owner's key)
    audience: str  # the public key (hex) of the coordinator it was signed for
    sent_at: float
    nonce: str


def sign_request(identity: Identity, method: str, path: str, body: bytes, now: float, audience: str) -> dict[str, str]:
    """Headers that prove `identity` sent this request at `now` to the coordinator whose
    public key (hex) is `audience`, once: a fresh random nonce rides along."""
    timestamp = f"{now:.3f}"
    nonce = secrets.token_hex(NONCE_BYTES)
    signature = identity.sign(_signed_bytes(method, path, audience, timestamp, nonce, hashlib.sha256(body).hexdigest()))
    return {
        KEY_HEADER: identity.public_hex,
        SIGNATURE_HEADER: signature.hex(),
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        AUDIENCE_HEADER: audience,
    }


def signed_by(headers: typing.Mapping[str, str], audience: str, now: float) -> SignedRequest:
    """What the signature headers claim, checked before the body is read: present and well
    formed, addressed to `audience`, sent within MAX_CLOCK_SKEW of `now`. The signature itself
    is checked against the body by `verify_request`. Raises `WireError` (401)."""
    values = [headers.get(name) for name in (KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER)]
    if not all(values):
        raise WireError("request is not signed (X-Osaas-Key/-Signature/-Timestamp/-Nonce/-Audience)", "unsigned")
    key_hex, sig_hex, timestamp, nonce = typing.cast(list[str], values)
    try:
        key, signature, sent_at = bytes.fromhex(key_hex), bytes.fromhex(sig_hex), float(timestamp)
    except ValueError as exc:
        raise WireError("signature headers are malformed", "bad_signature") from exc
    if len(key) != 32 or len(signature) != 64 or len(nonce) != 2 * NONCE_BYTES or not _is_hex(nonce):
        raise WireError("signature headers are malformed", "bad_signature")
    if headers.get(AUDIENCE_HEADER) != audience:
        raise WireError(
            f"request was signed for coordinator {str(headers.get(AUDIENCE_HEADER))[:16]}…, not this one"
            f" ({audience[:16]}…)",
            "wrong_audience",
        )
    if not math.isfinite(sent_at) or abs(now - sent_at) > MAX_CLOCK_SKEW:
        raise WireError(
            f"request timestamp is more than {MAX_CLOCK_SKEW:g} s from the coordinator's clock", "bad_signature"
        )
    return SignedRequest(key.hex(), audience, sent_at, nonce)


def verify_request(
    headers: typing.Mapping[str, str], method: str, path: str, body: bytes, now: float, audience: str
) -> SignedRequest:
    """The request's signer, or `WireError` (401): unsigned, malformed, for another coordinator,
    out of the clock window, or a signature that does not cover this method, path and body.
    A replayed nonce is the caller's to refuse (it remembers the nonces it saw)."""
    return verify_digest(headers, method, path, hashlib.sha256(body).hexdigest(), now, audience)


def verify_digest(
    headers: typing.Mapping[str, str], method: str, path: str, body_sha256: str, now: float, audience: str
) -> SignedRequest:
    """`verify_request` for a body that was hashed as it streamed (a bundle upload)."""
    signed = signed_by(headers, audience, now)
    message = _signed_bytes(method, path, audience, headers[TIMESTAMP_HEADER], signed.nonce, body_sha256)
    if not verify(bytes.fromhex(signed.signer), message, bytes.fromhex(headers[SIGNATURE_HEADER])):
        raise WireError("signature does not match the request", "bad_signature")
    return signed


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


# ---- typed messages --------------------------------------------------------------------

M = TypeVar("M")

MAX_STRING = 256  # characters: any string field that says no other cap (keys in hex, states, codes)


@dataclass(frozen=True, slots=True)
class Capped:
    """A string field's cap in characters, other than MAX_STRING: `Annotated[str, Capped(n)]`."""

    chars: int


MAX_NAME = 64  # a bundle's name or version, a workload's name (as bundle manifests allow)
MAX_PEER_NAME = 128  # the name a volunteer gives its peer (a host name is at most 64)
MAX_TEXT = 2000  # a sentence for people: an error, a reason, a rollout's news
MAX_URL = 8 * 1024  # a URL or an origin (as link-check jobs allow)
Name = Annotated[str, Capped(MAX_NAME)]
PeerName = Annotated[str, Capped(MAX_PEER_NAME)]
Text = Annotated[str, Capped(MAX_TEXT)]
Url = Annotated[str, Capped(MAX_URL)]
MAX_LOG = 4 * 1024  # characters of a failed unit's stderr tail, as a peer sends it
Log = Annotated[str, Capped(MAX_LOG)]


def clip(text: str | None, chars: int = MAX_TEXT) -> str | None:
    """`text` cut to `chars` characters (a sender's side of a cap: say less rather than be
    refused)."""
    return text if text is None or len(text) <= chars else text[: chars - 1] + "…"


@functools.cache
def _checker(hint: Any) -> Callable[[Any, str], Any]:
    """The validator of one field type, worked out once per type: a report batch checks
    thousands of fields, and looking at the type each time was most of the work."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        caps = [extra.chars for extra in extras if isinstance(extra, Capped)]
        if base is not str or len(caps) != 1:
            raise TypeError(f"unsupported field type {hint!r}")  # our bug, not theirs
        return functools.partial(_a_string, caps[0])
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        (inner,) = [o for o in options if o is not type(None)]
        check_inner = _checker(inner)
        if type(None) not in options:
            return check_inner

        def optional(value: Any, where: str) -> Any:
            return None if value is None else check_inner(value, where)

        return optional
    if origin is list:
        (item,) = typing.get_args(hint)
        check_item = _checker(item)

        def list_of(value: Any, where: str) -> Any:
            if not isinstance(value, list):
                raise WireError(f"{where} must be a list")
            return [check_item(v, f"{where}[{i}]") for i, v in enumerate(value)]

        return list_of
    if origin is dict or hint is dict:
        return _a_map
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return functools.partial(parse, hint)
    if hint is float:
        return _a_number
    if hint is int:
        return _an_integer
    if hint is str:
        return functools.partial(_a_string, MAX_STRING)
    if hint in (bool, bytes):
        return functools.partial(_of_type, hint)
    raise TypeError(f"unsupported field type {hint!r}")  # our bug, not theirs


def _a_map(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise WireError(f"{where} must be a map")
    return value


def _a_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WireError(f"{where} must be a finite number")
    return float(value)


def _an_integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{where} must be an integer")
    return value


def _a_string(cap: int, value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{where} must be of type str")
    if len(value) > cap:
        raise WireError(f"{where} is {len(value)} characters long; at most {cap} are allowed")
    return value


def _of_type(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, kind):
        raise WireError(f"{where} must be of type {kind.__name__}")
    return value


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, Callable[[Any, str], Any], bool], ...]:
    """(name, validator, required) of each field of message `cls`, worked out once per class:
    `typing.get_type_hints` is slow enough to show up in the coordinator's profile."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple(
        (f.name, _checker(hints[f.name]), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
    )


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def parse(cls: type[M], obj: Any, where: str = "body") -> M:
    """Build message `cls` from decoded msgpack `obj`, validating every field."""
    if not isinstance(obj, dict):
        raise WireError(f"{where} must be a map")
    kwargs = {}
    message_type: type = cls  # a class is hashable, whatever mypy makes of type[M]
    for name, check, required in _fields(message_type):
        if name in obj:
            kwargs[name] = check(obj[name], f"{where}.{name}")
        elif required:
            raise WireError(f"{where}.{name} is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise WireError(f"{where}: {exc}") from exc


def to_obj(message: Any) -> Any:
    """`message` as plain maps and lists for msgpack. Maps inside messages are plain data
    (payloads of hundreds of items) and go as they are: `dataclasses.asdict` deep-copied them."""
    kind = type(message)
    if kind in _PLAIN:
        return message
    if kind is list or kind is tuple:
        return [to_obj(v) for v in message]
    if dataclasses.is_dataclass(kind):
        return {name: to_obj(getattr(message, name)) for name in _field_names(kind)}
    if isinstance(message, (list, tuple)):
        return [to_obj(v) for v in message]
    return message


# What `to_obj` passes on as it is without looking further (most of what it meets).
_PLAIN = frozenset({str, int, float, bool, bytes, dict, type(None)})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    name: PeerName
    slots: int
    workloads: list[Name]
    version: Name = ""
    capacity: float = 0.0  # bytes/s the volunteer's budget sustains (0: not told)
    # None: the peer runs any admitted owner's bundle (in its sandbox); a list: it has no
    # sandbox and runs only bundles of these owner keys.
    trusted_owners: list[bytes] | None = None

    def __post_init__(self) -> None:
        _require(len(self.name) > 0, "name must not be empty")
        _check_owners(self.trusted_owners)
        _require(1 <= self.slots <= 256, "slots must be 1..256")
        _require(len(self.workloads) <= MAX_WORKLOADS, "too many workloads")
        _require(0 <= self.capacity <= MAX_CAPACITY, f"capacity must be 0..{MAX_CAPACITY:.0e} bytes/s")


MAX_CAPACITY = 1e15  # bytes/s: far above any real link, below float trouble
# The capacity a peer without a configured budget reports, and the weight a coordinator gives
# a peer that reported none: one number on both sides of the wire.
DEFAULT_CAPACITY = 10_000_000  # bytes/s


@dataclass(frozen=True, slots=True)
class PeerUsage:
    """How much of its budget a peer has used, sent with every lease request."""

    capacity: float  # bytes/s it sustains
    used: int  # bytes down + up in its current period
    cap: int | None = None  # bytes per period; None: no cap
    down_rate: float = 0.0  # bytes/s it moved lately, downloads
    up_rate: float = 0.0  # ... and uploads

    def __post_init__(self) -> None:
        _require(0 <= self.capacity <= MAX_CAPACITY, f"capacity must be 0..{MAX_CAPACITY:.0e} bytes/s")
        _require(0 <= self.used < 2**63, "used must be 0..2**63-1 bytes")
        _require(self.cap is None or 0 < self.cap < 2**63, "cap must be 1..2**63-1 bytes or nil")
        _require(0 <= self.down_rate <= MAX_CAPACITY and 0 <= self.up_rate <= MAX_CAPACITY, "rates out of range")


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    peer_id: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    max_units: int
    workloads: list[Name]
    usage: PeerUsage | None = None
    trusted_owners: list[bytes] | None = None  # as in RegisterRequest

    def __post_init__(self) -> None:
        _require(1 <= self.max_units <= 256, "max_units must be 1..256")
        _require(len(self.workloads) <= MAX_WORKLOADS, "too many workloads")
        _check_owners(self.trusted_owners)


MAX_TRUSTED_OWNERS = 64
MAX_WORKLOADS = 64  # names in a registration or a lease request


def _check_owners(owners: list[bytes] | None) -> None:
    _require(
        owners is None or (len(owners) <= MAX_TRUSTED_OWNERS and all(len(key) == 32 for key in owners)),
        f"trusted_owners must be at most {MAX_TRUSTED_OWNERS} owner keys of 32 bytes",
    )


ANY_WORKLOAD = "*"  # in LeaseRequest.workloads: this peer runs any bundle the coordinator names


@dataclass(frozen=True, slots=True)
class BundleRef:
    """Which bundle version runs a unit: the peer fetches it by `info_hash` (v1, 20 bytes)."""

    name: Name
    version: Name
    info_hash: bytes

    def __post_init__(self) -> None:
        _require(0 < len(self.name) <= 64, "name must be 1..64 characters")
        _require(0 < len(self.version) <= 64, "version must be 1..64 characters")
        _require(len(self.info_hash) == 20, "info_hash must be 20 bytes")


@dataclass(frozen=True, slots=True)
class Lease:
    unit_id: int
    token: int
    job_id: int
    workload: Name
    payload: dict
    expires_at: float
    bundle: BundleRef | None = None
    host: Url | None = None  # the origin every item of the unit is on (scheme://host:port); None: not one


@dataclass(frozen=True, slots=True)
class LeaseResponse:
    leases: list[Lease]
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """Names one lease: used to renew or release it. A release may say the peer cannot run the
    unit (`unable`: why, e.g. its bundle would not download here): the unit goes back without
    using an attempt, and the host goes to another peer for a while."""

    unit_id: int
    token: int
    unable: Text | None = None


@dataclass(frozen=True, slots=True)
class RenewResponse:
    expires_at: float


@dataclass(frozen=True, slots=True)
class Report:
    unit_id: int
    token: int
    exit_code: int
    payload: dict | None = None
    error: Text | None = None
    bundle_version: Name | None = None  # the bundle version that ran the unit
    crawl_delay: float | None = None  # seconds: the robots.txt Crawl-delay the peer keeps for the lease's host
    throttled: int | None = None  # answers of 429 or 503 the unit's fetches got (the host asks for rest)
    log: Log | None = None  # a failed unit's stderr tail (its last MAX_LOG characters)
    # Process API version 2 (overlay.wire_reports): items the lease already streamed and the
    # coordinator took, and the records streamed that it has not acknowledged yet.
    streamed: int | None = None
    items: list[dict] | None = None

    def __post_init__(self) -> None:
        _require(0 <= self.exit_code <= 3, "exit_code must be 0..3")
        _require(self.streamed is None or 0 <= self.streamed <= 2**31, "streamed must be 0..2^31")
        _require(self.throttled is None or 0 <= self.throttled <= 2**31, "throttled must be 0..2^31")
        _require(
            self.bundle_version is None or 0 < len(self.bundle_version) <= 64, "bundle_version must be 1..64 characters"
        )
        _require(self.crawl_delay is None or self.crawl_delay >= 0, "crawl_delay must be at least 0")


@dataclass(frozen=True, slots=True)
class ReportResponse:
    accepted: bool
    reason: Text = ""


@dataclass(frozen=True, slots=True)
class JobSubmit:
    workload: Name  # the bundle's name
    input: dict
    version: Name | None = None  # a bundle version to pin; None follows the bundle's rollout


@dataclass(frozen=True, slots=True)
class JobCreated:
    job_id: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: int
    workload: Name
    state: str  # "running" | "done" | "cancelled" | "deleted" (its results and logs are gone)
    units_total: int
    units_done: int
    items_total: int
    items_done: int
    counts: dict = field(default_factory=dict)  # result -> number of items
    created_at: float = 0.0
    finished_at: float | None = None
    owner: str | None = None  # the key (hex) that submitted it; None: the operator's
    limited: Text | None = None  # why it stopped adding links (an owner's URL limit), if it did
    input: Name = "urls"  # what its items are: "urls", "items" or "records" (its job model's input)
    vantage: int | None = None  # K: each URL is an item per vantage point

    @property
    def progress(self) -> str:
        """Its items done of all, in words: "3/10 URLs", "3/10 items", "3/15 answers (5 URLs from 3 vantage points)"."""
        done = f"{self.items_done}/{self.items_total}"
        if self.vantage:
            return f"{done} answers ({self.items_total // self.vantage} URLs from {self.vantage} vantage points)"
        return f"{done} {'URLs' if self.input == 'urls' else 'items'}"


@dataclass(frozen=True, slots=True)
class UnitLog:
    """A failed unit's stderr tail, as the peer that ran it sent it with its report."""

    unit_id: int
    peer_id: str  # the peer's key (hex)
    at: float
    exit_code: int
    error: Text | None
    log: Log


# ---- bundles ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwarmAddress:
    """A BitTorrent endpoint holding a bundle."""

    host: str
    port: int

    def __post_init__(self) -> None:
        _require(0 < len(self.host) <= 255, "host must be 1..255 characters")
        _require(0 < self.port < 65536, "port must be 1..65535")


@dataclass(frozen=True, slots=True)
class BundlePublish:
    """An owner's upload: the signed manifest (`workloads.bundle.encode`) and the archive."""

    manifest: bytes
    archive: bytes


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What a peer needs to fetch and check one bundle version (GET /v1/bundles/NAME/VERSION)."""

    name: Name
    version: Name
    info_hash: bytes  # v1, 20 bytes; the manifest names it too
    manifest: bytes  # the owner-signed manifest, `workloads.bundle.encode` bytes
    seeds: list[SwarmAddress]  # the coordinator's own seed(s)


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    """Signed by the bundle's owner: send `version` to `percent` of peers (100 completes it)."""

    version: Name
    percent: int
    force: bool = False  # roll out a version the coordinator rolled back, all the same

    def __post_init__(self) -> None:
        _require(1 <= self.percent <= 100, "percent must be 1..100")


@dataclass(frozen=True, slots=True)
class VersionStats:
    version: Name
    info_hash: bytes
    published_at: float
    units_ok: int
    units_failed: int
    rolled_back: bool = False  # the coordinator rolled it back (it goes out again only by force)


@dataclass(frozen=True, slots=True)
class BundleStatus:
    name: Name
    owner_key: str  # hex
    stable: Name | None  # the version every peer outside the rollout runs
    candidate: Name | None  # the version being rolled out, if any
    percent: int  # share of peers (0..100) that get the candidate
    state: str  # "stable" | "rolling_out" | "rolled_back"
    message: Text  # what happened last, in words (e.g. why it rolled back)
    versions: list[VersionStats] = field(default_factory=list)
