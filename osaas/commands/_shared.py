"""What every command group shares: argument types, the one error a command line gets, logging, signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import logging.handlers
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp

from coordinator.assignment import MAX_EPSILON
from coordinator.host_pacing import MAX_MIN_DELAY
from osaas import owner
from osaas.check import CheckError, validate_url
from overlay.announcements import valid_network
from overlay.errors import OsaasError
from overlay.identity import Identity, IdentityError
from peer.budget import BudgetError, parse_rate

_T = TypeVar("_T")

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
log = logging.getLogger("osaas")


class UsageError(OsaasError):
    """A command line that cannot work: one line for the user, exit code 2."""


def _absolute_path(text: str) -> Path:
    """A path made absolute against the directory the command started in: what runs later
    (a workload, a sandbox) runs elsewhere, where a relative path would name something else."""
    return Path(text).absolute()


def _public_key(text: str) -> str:
    """An Ed25519 public key as a command line gives it: 64 hex digits, lower-cased."""
    key = text.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a public key (64 hex digits, as `osaas bundle keygen` prints)"
        )
    return key


def default_owner_key() -> Path:
    """Where an owner's key lives unless `--key` says otherwise: the owner's config dir."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "osaas" / "owner.key"


def _add_key_argument(parser: argparse.ArgumentParser, what: str = "the owner's key, which signs the request") -> None:
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="KEYFILE",
        help=f"{what} (default: {default_owner_key()}, made by `osaas bundle keygen`)",
    )


def _load_key(path: Path | None) -> Identity:
    """The key at `path` (default: the owner's config dir), or one line saying what to do."""
    chosen = path or default_owner_key()
    if path is None and not chosen.exists():
        raise UsageError(
            f"no owner key at {chosen}: make one with `osaas bundle keygen`, have the operator grant it a role"
            " (`osaas coordinator grant add`), or give --key"
        )
    try:
        return Identity.load(chosen)
    except IdentityError as exc:
        raise UsageError(str(exc)) from exc


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8700)")
    return host.strip("[]"), int(port)


def _public_address(text: str) -> tuple[str, int | None]:
    """ADDR or ADDR:PORT ([ADDR]:PORT for IPv6): the IP address (and port, when a NAT forwards
    another one) at which other machines reach this one's bundle seeding."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not ADDR[:PORT] (e.g. 203.0.113.7:6881 or [2001:db8::7]:6881)"
            )
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an IP address (swarm records name addresses, not host names)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise argparse.ArgumentTypeError(f"{text!r}: {address} is not an address other machines can reach")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be 1-65535")
    return str(address), int(port) if port else None


def _host_port_list(text: str) -> tuple[tuple[str, int], ...]:
    """HOST:PORT[,HOST:PORT...] with names resolved: DHT nodes are addressed by IP."""
    addresses: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, port = _host_port(part)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise argparse.ArgumentTypeError(f"cannot resolve {host!r}: {exc.strerror}") from None
        ipv4 = [info for info in infos if info[0] == socket.AF_INET]
        addresses.append((str((ipv4 or infos)[0][4][0]), port))
    if not addresses:
        raise argparse.ArgumentTypeError("give at least one HOST:PORT")
    return tuple(addresses)


def _network(text: str) -> str:
    if not valid_network(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a network name (1-64 of a-z, 0-9, '.', '_', '-')")
    return text


def _coordinator_url(text: str) -> str:
    try:
        return validate_url(text).rstrip("/")
    except CheckError as exc:
        raise argparse.ArgumentTypeError(f"--coordinator: {exc}") from None


def _rate(text: str) -> int:
    """Bytes per second from "500000", "200KB", "2MB/s" or "1.5MiB/s"."""
    try:
        return parse_rate(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_delay(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 1 or 0.5)") from None
    if not 0 <= value <= MAX_MIN_DELAY:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be 0..{MAX_MIN_DELAY:g} seconds")
    return value


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.25)") from None
    if not 0 < value <= MAX_EPSILON:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most {MAX_EPSILON:g}")
    return value


def _duration(text: str) -> float:
    """Seconds from "90", "90s", "5m" or "1h"."""
    number, scale = text.strip().lower(), 1.0
    for suffix, factor in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if number.endswith(suffix):
            number, scale = number[: -len(suffix)], factor
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 5m or 1h") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most a day")
    return seconds


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and 64 <= int(width) <= 16384 and 64 <= int(height) <= 16384):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1280x720 (64..16384 each)")
    return int(width), int(height)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0..65535")
    return int(text)


def _status_port(text: str) -> int | None:
    return None if text == "off" else _port(text)


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address like 192.0.2.7 or 2001:db8::7") from None


def _percent(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole percentage 1..100")
    return int(text)


def _bundle_spec(text: str) -> tuple[str, str | None]:
    try:
        return owner.split_bundle(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_BYTES = 10 * 1024 * 1024  # a log file is rotated at this size
LOG_FILES_KEPT = 5  # rotated files kept beside it: the log never takes more than 60 MB


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-level, --log-format and --log-file, for the commands that run for a long time."""
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning"),
        default="info",
        help="debug adds a line per HTTP request and more (default info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (time, level, logger, message) for log collectors",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help=f"log to FILE instead of standard error, rotated at {LOG_FILE_BYTES // 2**20} MB with"
        f" {LOG_FILES_KEPT} old files kept (FILE.1 ... FILE.{LOG_FILES_KEPT}); under systemd, leave it out:"
        " the journal keeps standard error",
    )


def setup_logging_from(args: argparse.Namespace) -> None:
    """Logging as `add_logging_arguments`' options say."""
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}[args.log_level]
    _setup_logging(level, json_lines=args.log_format == "json", file=args.log_file)


def _setup_logging(level: int, *, json_lines: bool = False, file: Path | None = None) -> None:
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.handlers.RotatingFileHandler(
                file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILES_KEPT, encoding="utf-8"
            )
        except OSError as exc:
            raise UsageError(f"cannot write the log to {file}: {exc.strerror or exc}") from None
    if json_lines:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # kademlia logs every RPC at INFO; its warnings are what an operator needs.
    logging.getLogger("kademlia").setLevel(max(level, logging.WARNING))
    # rpcudp logs every unanswered RPC as an ERROR; overlay.dht reports what they amount to.
    logging.getLogger("rpcudp").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL)


def _run_until_signal(main_coro: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main_coro(stop)`; SIGTERM and SIGINT set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # Windows has no add_signal_handler
                loop.add_signal_handler(sig, stop.set)
        await main_coro(stop)

    asyncio.run(runner())


async def _with_session(fn: Callable[[aiohttp.ClientSession], Awaitable[_T]]) -> _T:
    async with aiohttp.ClientSession() as session:
        return await fn(session)
