"""The bundle format: a workload's code as a deterministic tar plus a signed manifest.

An owner keeps a source directory with a `bundle.toml`:

    name = "linkcheck"                 # 1-64 of [a-z0-9-_.]
    version = "1.2.0"
    entrypoint = ["python3", "-m", "linkcheck"]   # argv: python, the bundle first on sys.path,
                                                  # or a program inside the bundle
    capabilities = ["fetch"]
    [limits]                           # all optional, positive integers
    cpu_seconds = 120
    memory_mb = 1024
    open_files = 64
    timeout_seconds = 120

`build()` turns it into `NAME-VERSION.tar` (same input, same bytes: sorted entries, mtime 0,
uid/gid 0, modes 0644/0755) and `NAME-VERSION.manifest`, a msgpack map signed by the owner's
Ed25519 key over a canonical encoding and a domain string. The manifest names the archive's
SHA-256 and every file's SHA-256, so a peer can check what it fetched before running any of it.
The torrent layer adds the info-hash later with `with_info_hash()`, which re-signs.

A peer then: `decode()` -> `KeyPins.check()` -> `unpack()` (which checks the signature and the
archive hash itself and extracts member by member, refusing links, devices, traversal, bombs
and anything the manifest does not name) into `cache_path()`.

Errors: `BundleError` (one line a person can act on) means a bundle, manifest, archive or pin
file is bad; `ValueError` means we called something impossible (our bug).

A manifest may declare its jobs' model (`[job]`, `[results.fields]`: `job_model`); without one
its jobs follow the link checker's (`DEFAULT_MODEL`).

One module per step, each using only those before it: `job_model` (what jobs take, the schema
of result records), `manifest` (bundle.toml, limits, capabilities), `signing` (the signed manifest, its canonical bytes and encoding), `building`,
`unpacking` (archive checks, extraction), `pinning` (owner keys per bundle name, rotations).
This package's names are the public surface; the modules are not imported from outside.
"""

from __future__ import annotations

from workloads.bundle.building import (
    BuiltBundle,
    build,
    load_built,
)
from workloads.bundle.job_model import DEFAULT_MODEL, Field, JobModel, ModelError
from workloads.bundle.job_model import from_obj as model_from_obj
from workloads.bundle.manifest import (
    CAPABILITIES,
    DEFAULT_LIMITS,
    DOMAIN,
    MANIFEST_FILE,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    MAX_TOTAL_BYTES,
    ROTATION_DOMAIN,
    BundleError,
    Limits,
    Manifest,
    load_manifest,
    parse_manifest,
)
from workloads.bundle.pinning import (
    KeyPins,
    rotation_statement,
)
from workloads.bundle.signing import (
    SignedManifest,
    decode,
    encode,
    read_manifest,
    sign,
    verify_manifest,
    with_info_hash,
)
from workloads.bundle.unpacking import (
    cache_path,
    unpack,
    verify_archive,
)

__all__ = [
    "MANIFEST_FILE",
    "DOMAIN",
    "ROTATION_DOMAIN",
    "CAPABILITIES",
    "DEFAULT_LIMITS",
    "MAX_TOTAL_BYTES",
    "MAX_FILES",
    "MAX_MANIFEST_BYTES",
    "BundleError",
    "ModelError",
    "JobModel",
    "Field",
    "DEFAULT_MODEL",
    "model_from_obj",
    "Limits",
    "Manifest",
    "parse_manifest",
    "load_manifest",
    "SignedManifest",
    "sign",
    "with_info_hash",
    "verify_manifest",
    "encode",
    "decode",
    "read_manifest",
    "BuiltBundle",
    "build",
    "load_built",
    "verify_archive",
    "cache_path",
    "unpack",
    "rotation_statement",
    "KeyPins",
]
