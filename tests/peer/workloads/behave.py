"""A test workload whose behaviour, good or hostile, is chosen by the unit's payload["mode"]."""

import os
import subprocess
import sys
import time

from workloads.process_api import FetchRequest, FetchResult, FrameDecoder, Result, Unit, encode_frame

_stdin = sys.stdin.buffer
_stdout = sys.stdout.buffer
_decoder = FrameDecoder()
_pending: list[dict] = []


def send(message: dict) -> None:
    _stdout.write(encode_frame(message))
    _stdout.flush()


def receive() -> dict:
    while not _pending:
        chunk = os.read(_stdin.fileno(), 65536)
        if not chunk:
            sys.exit("stdin closed")
        _pending.extend(_decoder.feed(chunk))
    return _pending.pop(0)


def finish(status: int, payload: dict, exit_code: int | None = None) -> None:
    send(Result(status=status, payload=payload).to_frame())
    sys.exit(status if exit_code is None else exit_code)


def fetch_all(urls: list[str], method: str = "GET") -> list[dict]:
    for i, url in enumerate(urls, start=1):
        send(FetchRequest(id=i, method=method, url=url, want_body=True).to_frame())
    answers = [FetchResult.from_frame(receive()) for _ in urls]
    return [
        {"id": a.id, "url": a.url, "status": a.status, "error": a.error, "body": a.body.decode()}
        for a in sorted(answers, key=lambda a: a.id)
    ]


def main() -> None:
    unit = Unit.from_frame(receive())
    p = unit.payload
    mode = p["mode"]
    if mode == "fetch":
        finish(0, {"unit_id": unit.unit_id, "results": fetch_all(p["urls"])})
    elif mode == "status":
        print("about to finish", file=sys.stderr)
        finish(p["status"], {"said": p["status"]}, p.get("exit"))
    elif mode == "env":
        with open("scratch.txt", "w") as f:
            f.write("left behind")
        env = os.environ
        finish(0, {"env": sorted(env), "cwd": os.getcwd(), "home": env["HOME"], "tmpdir": env["TMPDIR"]})
    elif mode == "garbage":
        _stdout.write(b"hello, this is not a frame\n")
        _stdout.flush()
        time.sleep(60)
    elif mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        send(FetchRequest(id=1, method="GET", url=f"http://pids.invalid/{os.getpid()}/{child.pid}").to_frame())
        time.sleep(60)
    elif mode == "escape":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
        send(FetchRequest(id=1, method="GET", url=f"http://pids.invalid/{os.getpid()}/{child.pid}").to_frame())
        receive()
        sys.exit(0)
    elif mode == "crash":
        raise RuntimeError("the workload fell over")
    elif mode == "no_result":
        sys.exit(0)
    elif mode == "oversized":
        _stdout.write(b"\xff\xff\xff\xff")
        _stdout.flush()
        time.sleep(60)
    elif mode == "flood":
        i = 0
        while True:
            i += 1
            send(FetchRequest(id=i, method="HEAD", url=f"http://flood.invalid/{i}").to_frame())
    elif mode == "byte_flood":
        url = "http://flood.invalid/" + "x" * (1024 * 1024)
        i = 0
        while True:
            i += 1
            send(FetchRequest(id=i, method="HEAD", url=url).to_frame())
    elif mode == "partial_frame":
        _stdout.write(b"\x00\x00\x00\x64" + b"only ten b")
        _stdout.flush()
        sys.exit(0)
    elif mode == "reuse_id":
        send(FetchRequest(id=7, method="HEAD", url="http://a.invalid/").to_frame())
        send(FetchRequest(id=7, method="HEAD", url="http://b.invalid/").to_frame())
        time.sleep(60)
    elif mode == "progress":  # version 2 may say how far it is; version 1 may not
        send({"type": "progress", "done": 1})
        send({"type": "progress", "done": 2})
        finish(0, {"version": unit.version})
    elif mode == "stream":  # version 2 may stream items before its result; version 1 may not
        for record in p["items"][: p["streamed"]] + p.get("beyond", []):
            send({"type": "item", "record": record})
        finish(0, {"items": p["items"][p["streamed"] :]})
    elif mode == "stream_garbage":
        send({"type": "item", "record": ["not", "a", "map"]})
        time.sleep(60)
    elif mode == "stream_huge":
        send({"type": "item", "record": {"url": "x" * (3 * 1024 * 1024)}})
        time.sleep(60)
    elif mode == "unknown":
        send({"type": "hello"})
        time.sleep(60)
    elif mode == "after_result":
        send(Result(status=0, payload={}).to_frame())
        send({"type": "fetch", "id": 1, "method": "GET", "url": "http://a.invalid/", "want_body": False})
        sys.exit(0)
    elif mode == "limits":
        import resource

        names = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NOFILE")
        finish(0, {name: resource.getrlimit(getattr(resource, name))[0] for name in names})
    else:
        finish(3, {}, 3)


if __name__ == "__main__":
    main()
