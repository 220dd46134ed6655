"""`osaas screensaver [install]`: what the peer on this machine does, drawn."""

from __future__ import annotations

import argparse
from pathlib import Path

from osaas.commands._shared import (
    EXIT_OK,
    UsageError,
    _port,
    _positive,
    _size,
)
from peer.status import DEFAULT_STATUS_PORT


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    saver = commands.add_parser("screensaver", help="show what the peer on this machine is doing, live")
    saver.add_argument(
        "--status-port",
        type=_port,
        default=DEFAULT_STATUS_PORT,
        metavar="PORT",
        help=f"the port the peer serves its status on (default {DEFAULT_STATUS_PORT})",
    )
    where = saver.add_mutually_exclusive_group()
    where.add_argument("--fullscreen", action="store_true", help="fill the screen; any key or click ends it")
    where.add_argument(
        "-root", "--root", action="store_true", help="draw on the root window (XScreenSaver; $XSCREENSAVER_WINDOW wins)"
    )
    where.add_argument("-window-id", "--window-id", metavar="ID", help="draw into this X window (XScreenSaver)")
    saver.add_argument("--size", type=_size, default=None, metavar="WxH", help="window size (default 1280x720)")
    saver.add_argument("--frames", type=_positive, metavar="N", help="stop after N frames")
    saver.add_argument("--snapshot", type=Path, metavar="PNG", help="save the last frame as a PNG when it stops")
    saver.set_defaults(run=_cmd_screensaver)
    saver_actions = saver.add_subparsers(metavar="ACTION")
    install = saver_actions.add_parser("install", help="print (or add) the XScreenSaver entry for this screensaver")
    install.add_argument("--write", action="store_true", help="add it to the programs of ~/.xscreensaver")
    install.set_defaults(run=_cmd_screensaver_install)


def _cmd_screensaver(args: argparse.Namespace) -> int:
    from screensaver.app import DEFAULT_SIZE, Options, ScreensaverError, run, window_from_environment

    try:
        options = Options(
            status_port=args.status_port,
            fullscreen=args.fullscreen,
            window_id=window_from_environment(args.root, args.window_id),
            size=args.size or DEFAULT_SIZE,
            frames=args.frames,
            snapshot=args.snapshot,
        )
        run(options)
    except ScreensaverError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK


def _cmd_screensaver_install(args: argparse.Namespace) -> int:
    from screensaver.install import InstallError, add_entry, program_path, xscreensaver_entry

    entry = xscreensaver_entry(program_path())
    if not args.write:
        print("Add this line to the `programs:` list of ~/.xscreensaver (or run with --write):")
        print(entry)
        return EXIT_OK
    config = Path.home() / ".xscreensaver"
    try:
        added = add_entry(config, entry)
    except InstallError as exc:
        raise UsageError(str(exc)) from exc
    print(f"added to {config}" if added else f"already in {config}")
    return EXIT_OK
