"""A deterministic generated web site for link-check benchmarks.

``build_site`` is pure: the same (pages, broken_ratio, seed) always gives the same HTML and
the same set of broken links. ``serve`` serves a site from memory with aiohttp; every
response carries ``LinkChecker: 1`` so LinkChecker does not throttle itself.

    python -m bench.site --pages 3000 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

SECTIONS = ("docs", "guide", "blog", "news", "api", "about")
TREE_FANOUT = 4
MIN_LINKS, MAX_LINKS = 10, 20
FIGURE_COUNT = 4
WORDS = (
    "volunteer peer bandwidth link crawler archive mirror cache index page site network "
    "request response header status redirect anchor image table section release project "
    "community service schedule report result quality public open source checker"
).split()
# A 1x1 transparent PNG.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
ROBOTS_TXT = b"User-agent: *\nAllow: /\n"
NOT_FOUND_HTML = b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>"


@dataclass(frozen=True)
class Site:
    """A generated site: HTML pages and images by path, plus the paths that answer 404."""

    pages: dict[str, str]
    images: dict[str, bytes]
    broken: frozenset[str]

    def broken_urls(self, base_url: str) -> set[str]:
        """The expected broken links as absolute URLs under ``base_url``."""
        return {base_url.rstrip("/") + path for path in self.broken}

    def link_count(self) -> int:
        """Number of <a href> occurrences across all pages."""
        return sum(text.count("<a href=") for text in self.pages.values())


def page_paths(count: int) -> list[str]:
    """Root, one index per section, then content pages spread round-robin over sections."""
    count = max(count, 1 + len(SECTIONS))
    paths = ["/"] + [f"/{name}/" for name in SECTIONS]
    for number in range(count - len(paths)):
        section = SECTIONS[number % len(SECTIONS)]
        paths.append(f"/{section}/page-{number:05d}.html")
    return paths


def tree_links(paths: list[str]) -> dict[str, list[str]]:
    """Link each content page from its parent in a per-section tree rooted at the section index.

    Together with the nav bar this makes every page reachable from ``/``.
    """
    children: dict[str, list[str]] = {path: [] for path in paths}
    by_section: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for path in paths[1 + len(SECTIONS) :]:
        by_section[path.split("/")[1]].append(path)
    for name, members in by_section.items():
        for index, path in enumerate(members):
            parent = f"/{name}/" if index < TREE_FANOUT else members[index // TREE_FANOUT - 1]
            children[parent].append(path)
    return children


def content_links(paths: list[str], rng: random.Random) -> dict[str, list[str]]:
    """Give every page 10-20 distinct page links: nav + tree children + random extras."""
    nav = paths[: 1 + len(SECTIONS)]
    links = tree_links(paths)
    for path in paths:
        wanted = rng.randint(MIN_LINKS, MAX_LINKS) - len(nav)
        chosen = set(links[path]) | set(nav) | {path}
        wanted = min(wanted, len(links[path]) + len(paths) - len(chosen))  # a small site has fewer
        while len(links[path]) < wanted:
            candidate = rng.choice(paths)
            if candidate not in chosen:
                chosen.add(candidate)
                links[path].append(candidate)
    return links


def add_broken_links(links: dict[str, list[str]], broken_ratio: float, rng: random.Random) -> frozenset[str]:
    """Add links to missing pages until about ``broken_ratio`` of all links are broken.

    Every broken target is referenced from 1-3 distinct pages. Returns the broken paths.
    """
    paths = list(links)
    good = sum(len(targets) for targets in links.values()) + len(paths) * (1 + len(SECTIONS))
    wanted = round(good * broken_ratio / (1 - broken_ratio)) if broken_ratio > 0 else 0
    broken: set[str] = set()
    added = 0
    while added < wanted:
        target = f"/{rng.choice(SECTIONS)}/missing-{len(broken):05d}.html"
        referrers = rng.sample(paths, min(len(paths), rng.randint(1, 3)))
        for referrer in referrers:
            position = rng.randint(0, len(links[referrer]))
            links[referrer].insert(position, target)
        broken.add(target)
        added += len(referrers)
    return frozenset(broken)


def title_for(path: str) -> str:
    """A readable page title derived from the path."""
    if path == "/":
        return "Home"
    parts = [part for part in path.strip("/").split("/") if part]
    return " / ".join(part.removesuffix(".html").replace("-", " ").title() for part in parts)


def href_for(source: str, target: str) -> str:
    """Root-relative href, or a plain relative one for content pages in the same directory."""
    source_dir = source.rsplit("/", 1)[0]
    target_dir, target_name = target.rsplit("/", 1)
    if source_dir == target_dir and target_name:
        return target_name
    return target


def sentence(rng: random.Random) -> str:
    """One sentence of filler text."""
    words = rng.choices(WORDS, k=rng.randint(8, 18))
    return " ".join(words).capitalize() + "."


def render_page(path: str, nav: list[str], links: list[str], rng: random.Random) -> str:
    """Render one page: header with logo, nav bar, paragraphs with links, maybe a figure."""
    title = html.escape(title_for(path))
    nav_items = "".join(
        f'<li><a href="{href_for(path, target)}">{html.escape(title_for(target))}</a></li>' for target in nav
    )
    paragraphs = []
    for start in range(0, len(links), 3):
        anchors = " ".join(
            f'<a href="{href_for(path, target)}">{html.escape(title_for(target))}</a>'
            for target in links[start : start + 3]
        )
        paragraphs.append(f"<p>{sentence(rng)} See {anchors}. {sentence(rng)}</p>")
    figure = ""
    if rng.random() < 0.1:
        number = rng.randrange(FIGURE_COUNT)
        figure = f'<figure><img src="/img/figure-{number}.png" alt="Figure {number}"></figure>'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f'<body><header><img src="/img/logo.png" alt="logo"><h1>{title}</h1></header>\n'
        f"<nav><ul>{nav_items}</ul></nav>\n"
        f"<main>{''.join(paragraphs)}{figure}</main>\n"
        "<footer><p>Generated benchmark site.</p></footer></body></html>\n"
    )


def build_site(pages: int = 3000, broken_ratio: float = 0.05, seed: int = 1) -> Site:
    """Generate the site. Pure: depends only on the arguments."""
    rng = random.Random(seed)
    paths = page_paths(pages)
    links = content_links(paths, rng)
    broken = add_broken_links(links, broken_ratio, rng)
    nav = paths[: 1 + len(SECTIONS)]
    rendered = {path: render_page(path, nav, links[path], rng) for path in paths}
    images = {"/img/logo.png": PIXEL_PNG}
    images.update({f"/img/figure-{n}.png": PIXEL_PNG for n in range(FIGURE_COUNT)})
    return Site(pages=rendered, images=images, broken=broken)


def make_app(site: Site) -> web.Application:
    """An aiohttp app answering every path from pre-encoded bodies in memory."""
    bodies: dict[str, tuple[bytes, str]] = {path: (text.encode(), "text/html") for path, text in site.pages.items()}
    bodies.update({path: (data, "image/png") for path, data in site.images.items()})
    bodies["/robots.txt"] = (ROBOTS_TXT, "text/plain")

    async def handle(request: web.Request) -> web.Response:
        found = bodies.get(request.path)
        headers = {"LinkChecker": "1"}
        if found is None:
            return web.Response(status=404, body=NOT_FOUND_HTML, content_type="text/html", headers=headers)
        body, content_type = found
        charset = "utf-8" if content_type.startswith("text/") else None
        return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@asynccontextmanager
async def serve(site: Site, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``site`` on host:port (0 picks a free port); yields the base URL."""
    runner = web.AppRunner(make_app(site), access_log=None)
    await runner.setup()
    try:
        tcp = web.TCPSite(runner, host, port, backlog=1024)
        await tcp.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
    finally:
        await runner.cleanup()


async def serve_forever(site: Site, host: str, ports: list[int]) -> None:
    """Serve until cancelled on each of `ports` (each its own website to a crawler), printing
    each base URL once listening."""
    async with contextlib.AsyncExitStack() as stack:
        for port in ports:
            base_url = await stack.enter_async_context(serve(site, host, port))
            print(f"serving {len(site.pages)} pages, {len(site.broken)} broken targets at {base_url}/", flush=True)
        await asyncio.Event().wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the generated benchmark site.")
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--broken-ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, action="append", help="repeatable: one website per port (default: any)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    site = build_site(args.pages, args.broken_ratio, args.seed)
    try:
        asyncio.run(serve_forever(site, args.host, args.port or [0]))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
