"""A bundle's manifest as its owner writes it (`bundle.toml`): validated once, where text becomes a `Manifest`."""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.errors import OsaasError
from workloads.bundle import job_model
from workloads.bundle.job_model import JobModel

log = logging.getLogger(__name__)

MANIFEST_FILE = "bundle.toml"
DOMAIN = "osaas-bundle-manifest-v1"
ROTATION_DOMAIN = "osaas-bundle-key-rotation-v1"
CAPABILITIES = frozenset({"fetch"})
DEFAULT_LIMITS = {"cpu_seconds": 120, "memory_mb": 1024, "open_files": 64, "timeout_seconds": 120}
# Far beyond any sane limit, small enough for every platform's rlimit and timer types.
_MAX_LIMIT = 2**31 - 1
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
# 10,000 files with long paths fit easily; anything larger is not a manifest we want to parse.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_ENTRYPOINT_ARGS = 64
_MAX_ARG_CHARS = 1024
_MAX_PATH_CHARS = 1024
# BitTorrent v1 info-hashes are SHA-1 (20 bytes), v2 ones SHA-256 (32 bytes).
_INFO_HASH_SIZES = (20, 32)
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc",)
_NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")
# Versions end up in file names, so only characters that are safe on every file system.
_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")
_CHUNK = 1024 * 1024
_TOML_KEYS = frozenset({"name", "version", "entrypoint", "api_version", "limits", "capabilities", "job", "results"})
# The signed manifest's keys: the TOML's (its job model as one map, `job_model`) and the seal's.
_MANIFEST_KEYS = frozenset({"name", "version", "entrypoint", "api_version", "limits", "capabilities", "job_model"})
API_VERSIONS = (1, 2)  # the process API versions a manifest may ask for (workloads.process_api)
_SIGNED_KEYS = _MANIFEST_KEYS | {"archive_sha256", "files", "owner_key", "info_hash", "signature"}


class BundleError(OsaasError):
    code = "invalid_bundle"

    """A bundle, manifest, archive or pin file that is malformed, tampered with or unsafe."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(message)


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int = DEFAULT_LIMITS["cpu_seconds"]
    memory_mb: int = DEFAULT_LIMITS["memory_mb"]
    open_files: int = DEFAULT_LIMITS["open_files"]
    timeout_seconds: int = DEFAULT_LIMITS["timeout_seconds"]

    def __post_init__(self) -> None:
        for key in DEFAULT_LIMITS:
            value = getattr(self, key)
            _require(
                type(value) is int and 0 < value <= _MAX_LIMIT,
                f"limits.{key} must be a positive integer",
            )

    def as_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in DEFAULT_LIMITS}


@dataclass(frozen=True, slots=True)
class Manifest:
    """What `bundle.toml` says: validated on construction."""

    name: str
    version: str
    entrypoint: tuple[str, ...]
    limits: Limits = Limits()
    capabilities: tuple[str, ...] = ()
    job: JobModel | None = None  # None: no [job] table, the link checker's model (`model`)
    api_version: int = 1  # the process API version its workload speaks

    def __post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and _NAME_RE.fullmatch(self.name) is not None,
            "name must be 1-64 characters of a-z, 0-9, '-', '_' and '.'",
        )
        _require(
            isinstance(self.version, str) and _VERSION_RE.fullmatch(self.version) is not None,
            "version must be a string like \"1.2.0\" (letters, digits, '.', '+', '-')",
        )
        _require(
            isinstance(self.entrypoint, tuple)
            and 0 < len(self.entrypoint) <= _MAX_ENTRYPOINT_ARGS
            and all(_is_arg(arg) for arg in self.entrypoint),
            "entrypoint must be a non-empty list of non-empty strings",
        )
        _require(isinstance(self.limits, Limits), "limits must be a table")
        _require(
            isinstance(self.capabilities, tuple) and all(isinstance(c, str) for c in self.capabilities),
            "capabilities must be a list of strings",
        )
        for capability in self.capabilities:
            _require(
                capability in CAPABILITIES,
                f"capability {capability!r} is not one of {sorted(CAPABILITIES)}",
            )
        _require(len(set(self.capabilities)) == len(self.capabilities), "capabilities has duplicates")
        _require(self.job is None or isinstance(self.job, JobModel), "job must be a table")
        _require(
            type(self.api_version) is int and self.api_version in API_VERSIONS,
            f"api_version must be one of {', '.join(map(str, API_VERSIONS))}",
        )

    @property
    def model(self) -> JobModel:
        """The job model its jobs follow: the declared one, else the link checker's."""
        return job_model.DEFAULT_MODEL if self.job is None else self.job

    @property
    def stem(self) -> str:
        """The archive's and manifest file's name without extension."""
        return f"{self.name}-{self.version}"


def _is_arg(arg: object) -> bool:
    return isinstance(arg, str) and 0 < len(arg) <= _MAX_ARG_CHARS and "\0" not in arg


def _manifest_from_map(obj: Mapping[str, Any], where: str) -> Manifest:
    """Build a `Manifest` from a TOML table or decoded msgpack map; errors say `where`."""
    try:
        for key in ("name", "version", "entrypoint"):
            _require(key in obj, f"{key} is missing")
        raw_limits = obj.get("limits", {})
        _require(isinstance(raw_limits, dict), "limits must be a table")
        for key in raw_limits:
            _require(key in DEFAULT_LIMITS, f"limits.{key} is not a known limit")
        entrypoint = obj["entrypoint"]
        capabilities = obj.get("capabilities", [])
        _require(isinstance(entrypoint, list), "entrypoint must be a non-empty list of non-empty strings")
        _require(isinstance(capabilities, list), "capabilities must be a list of strings")
        job: JobModel | None = None
        if "job_model" in obj:
            job = job_model.from_obj(obj["job_model"])
        elif "job" in obj or "results" in obj:
            job = job_model.from_toml(obj.get("job"), obj.get("results"))
        return Manifest(
            name=obj["name"],
            version=obj["version"],
            entrypoint=tuple(entrypoint),
            limits=Limits(**raw_limits),
            # Sorted so that the order an owner wrote them in cannot change the signed bytes.
            capabilities=tuple(sorted(capabilities, key=str)),
            job=job,
            api_version=obj.get("api_version", 1),
        )
    except (BundleError, job_model.ModelError) as exc:
        raise BundleError(f"{where}: {exc}") from None


def parse_manifest(text: str) -> Manifest:
    """Parse the text of a `bundle.toml`."""
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{MANIFEST_FILE}: not valid TOML ({exc})") from None
    for key in obj:
        _require(key in _TOML_KEYS, f"{MANIFEST_FILE}: unknown key {key!r}")
    return _manifest_from_map(obj, MANIFEST_FILE)


def load_manifest(source_dir: Path) -> Manifest:
    path = source_dir / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read ({exc})") from None
    return parse_manifest(text)


def _check_relpath(path: object, where: str) -> str:
    """A relative POSIX path that is safe on Linux, macOS and Windows alike."""
    _require(isinstance(path, str) and 0 < len(path) <= _MAX_PATH_CHARS, f"{where}: bad path {path!r}")
    assert isinstance(path, str)
    # Backslashes and colons are separators or drive letters on Windows volunteers' machines.
    _require(not any(c in path for c in "\0\\:"), f"{where}: path {path!r} has a forbidden character")
    _require(not path.startswith("/"), f"{where}: path {path!r} is absolute")
    parts = path.split("/")
    _require(".." not in parts, f"{where}: path {path!r} contains '..'")
    _require(all(p not in ("", ".") for p in parts), f"{where}: path {path!r} is not canonical")
    return path
