"""Writing a file so that a crash leaves either the old content or the new, never a part; and
secrets kept in a file only its owner reads."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A temp file beside `path` to write; synced and renamed over `path` when the block ends
    without an error, removed otherwise."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def secret_token(path: Path) -> str:
    """The random token kept in `path` (mode 0600), made on first use: what a local page or a
    dashboard asks for before it lets anyone in."""
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    with atomic_file(path, mode=0o600) as f:
        f.write(token.encode() + b"\n")
    return token


def read_toml(path: Path) -> dict[str, Any] | None:
    """The TOML table in the file at `path`, None when there is no such file; ValueError with
    the reason in one line when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
