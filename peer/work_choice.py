"""Whom the volunteer works for: one coordinator by its URL, or the coordinators a network
announces in the DHT, a preferred one first.

Kept in `work.toml` beside the budget file (the volunteer's config dir), written by the local
page; `osaas peer run` flags win over it for the run they start. A peer started with a
coordinator URL keeps working by URL (it runs no DHT node); one started with DHT bootstrap
nodes keeps finding coordinators in a network.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yarl import URL

from overlay.announcements import valid_network
from overlay.errors import OsaasError
from overlay.files import atomic_file, read_toml

WORK_FILE = "work.toml"
DEFAULT_NETWORK = "public"
MAX_URL = 2000


class WorkChoiceError(OsaasError, ValueError):
    """A choice that cannot be used: one line for the volunteer."""


@dataclass(frozen=True, slots=True)
class WorkChoice:
    coordinator: str | None = None  # work for this coordinator only (no DHT)
    network: str = DEFAULT_NETWORK  # else: the coordinators announced in this network
    prefer: str | None = None  # and this one of them first, when it is announced and answers


def coordinator_url(text: str, what: str = "coordinator") -> str:
    """An absolute http(s) URL without a trailing slash, or WorkChoiceError."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_URL or not text.isprintable():
        raise WorkChoiceError(f"{what} must be an http(s) URL of at most {MAX_URL} printable characters")
    try:
        url = URL(text.strip())
    except (ValueError, TypeError) as exc:
        raise WorkChoiceError(f"{what}: {text!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise WorkChoiceError(f"{what}: {text!r} is not an http(s) URL like http://coordinator.example:8700")
    return str(url).rstrip("/")


def network_name(text: str) -> str:
    if not isinstance(text, str) or not valid_network(text):
        raise WorkChoiceError(f"network {text!r} must be 1-64 of a-z, 0-9, '.', '_', '-'")
    return text


def changed(current: WorkChoice, form: Any, *, by_url: bool) -> WorkChoice:
    """The choice a form asks for, for a peer that works by URL (`by_url`) or through the DHT.
    Form keys: "coordinator" (by URL), or "network" and "prefer" ("" for none)."""
    if not isinstance(form, dict):
        raise WorkChoiceError("the form is a map")
    allowed = {"coordinator"} if by_url else {"network", "prefer"}
    if not set(form) <= allowed:
        unknown = ", ".join(sorted(set(form) - allowed))
        mode = "works for one coordinator by its URL" if by_url else "finds coordinators in the DHT"
        raise WorkChoiceError(f"this peer {mode}: {unknown} cannot be set (give {', '.join(sorted(allowed))})")
    if by_url:
        return replace(current, coordinator=coordinator_url(form.get("coordinator", "")))
    prefer = form.get("prefer", current.prefer or "")
    return replace(
        current,
        network=network_name(form.get("network", current.network)),
        prefer=coordinator_url(prefer, "preferred coordinator") if prefer else None,
    )


def load(path: Path) -> WorkChoice:
    """The choice in `path`; a missing file is the default choice."""
    try:
        data = read_toml(path)
    except ValueError as exc:
        raise WorkChoiceError(f"{path}: {exc}") from exc
    if data is None:
        return WorkChoice()
    unknown = set(data) - {"coordinator", "network", "prefer"}
    if unknown:
        raise WorkChoiceError(
            f"{path}: unknown key {sorted(unknown)[0]!r}; known keys are coordinator, network, prefer"
        )
    try:
        return WorkChoice(
            coordinator=coordinator_url(data["coordinator"]) if "coordinator" in data else None,
            network=network_name(data.get("network", DEFAULT_NETWORK)),
            prefer=coordinator_url(data["prefer"], "prefer") if "prefer" in data else None,
        )
    except WorkChoiceError as exc:
        raise WorkChoiceError(f"{path}: {exc}") from exc


def save(path: Path, choice: WorkChoice) -> None:
    lines = ["# Whom the osaas peer works for; `osaas peer run` flags override it for one run."]
    if choice.coordinator is not None:
        lines.append(f"coordinator = {_toml_string(choice.coordinator)}")
    lines.append(f"network = {_toml_string(choice.network)}")
    if choice.prefer is not None:
        lines.append(f"prefer = {_toml_string(choice.prefer)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(("\n".join(lines) + "\n").encode())


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
