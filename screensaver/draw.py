"""Painting a `Scene` (screensaver.view) on a pygame surface: calm colours, large type.

`draw` paints one whole frame; `t` (seconds) moves the slow parts: the list of checked URLs
scrolls upward and the "working" dot breathes. Sizes follow the surface, so the same code
fills a small preview window and a 4K screen.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import pygame

from screensaver.view import Scene, Tone

BACKGROUND_TOP = (14, 27, 42)
BACKGROUND_BOTTOM = (27, 38, 59)
TEXT = (224, 225, 221)
MUTED = (141, 153, 174)
PANEL = (36, 51, 74)
TONES: dict[Tone, tuple[int, int, int]] = {
    "good": (128, 203, 160),
    "bad": (239, 131, 120),
    "warn": (240, 196, 110),
    "quiet": (141, 153, 174),
}
STATE_COLOURS = {"working": TONES["good"], "idle": MUTED, "looking": TONES["warn"], "paused": TONES["warn"]}
SCROLL_SECONDS = 2.5  # one line of the URL list moves up in this long


class Painter:
    """Fonts sized for one surface size; `draw` paints frames with them."""

    def __init__(self, size: tuple[int, int]) -> None:
        pygame.font.init()
        self.size = size
        unit = max(10, min(size[0] // 60, size[1] // 34))
        self.unit = unit
        self.big = pygame.font.Font(None, unit * 4)
        self.large = pygame.font.Font(None, unit * 2)
        self.body = pygame.font.Font(None, round(unit * 1.3))
        self.small = pygame.font.Font(None, unit)
        self._background = _gradient(size)

    def draw(self, surface: pygame.Surface, scene: Scene, t: float) -> None:
        surface.blit(self._background, (0, 0))
        if not scene.running:
            self._not_running(surface, scene)
            return
        u = self.unit
        width, height = self.size
        self._header(surface, scene, t)
        left = pygame.Rect(u * 2, u * 7, width * 55 // 100 - u * 3, height - u * 9)
        right = pygame.Rect(left.right + u * 2, left.top, width - left.right - u * 4, left.height)
        checked = pygame.Rect(left.left, left.top, left.width, left.height - u * 10)
        network = pygame.Rect(left.left, checked.bottom + u, left.width, u * 9)
        self._checked(surface, scene, checked, t)
        self._network(surface, scene, network, t)
        self._side(surface, scene, right)

    # ---- parts ---------------------------------------------------------------------------

    def _not_running(self, surface: pygame.Surface, scene: Scene) -> None:
        width, height = self.size
        self._text(surface, self.big, scene.headline, TEXT, center=(width // 2, height // 2 - self.unit * 2))
        for i, line in enumerate(_wrap(self.body, scene.detail or "", width - self.unit * 8)):
            self._text(surface, self.body, line, MUTED, center=(width // 2, height // 2 + self.unit * (2 + 2 * i)))

    def _header(self, surface: pygame.Surface, scene: Scene, t: float) -> None:
        u = self.unit
        colour = STATE_COLOURS.get(scene.state, MUTED)
        breathe = 0.75 + 0.25 * math.sin(t * 2.0) if scene.state == "working" else 1.0
        pygame.draw.circle(surface, _scaled(colour, breathe), (u * 3, u * 3), round(u * 0.8))
        self._text(surface, self.large, scene.name, TEXT, topleft=(u * 5, u * 2))
        self._text(surface, self.body, scene.headline, colour, topleft=(u * 5, u * 4))
        if scene.detail:
            self._text(surface, self.small, scene.detail, MUTED, topleft=(u * 5, round(u * 5.6)))

    def _checked(self, surface: pygame.Surface, scene: Scene, area: pygame.Rect, t: float) -> None:
        u = self.unit
        self._text(surface, self.small, "URLS CHECKED", MUTED, topleft=area.topleft)
        lines = scene.checked
        if not lines:
            self._text(surface, self.body, "nothing checked yet", MUTED, topleft=(area.left, area.top + u * 2))
            return
        step = round(u * 1.9)
        shown = max(1, (area.height - u * 2) // step)
        # The list moves up one line every SCROLL_SECONDS, newest at the top, round and round.
        offset = (t / SCROLL_SECONDS) % max(len(lines), 1)
        first, fraction = int(offset), offset - int(offset)
        clip = surface.get_clip()
        surface.set_clip(pygame.Rect(area.left, area.top + u * 2, area.width, area.height - u * 2))
        for row in range(shown + 1):
            line = lines[(first + row) % len(lines)]
            if len(lines) <= shown and row >= len(lines):
                break
            y = area.top + u * 2 + round((row - (fraction if len(lines) > shown else 0)) * step)
            fade = 1.0 - 0.55 * row / max(shown, 1)
            label_colour = _scaled(TONES[line.tone], fade)
            label = self.body.render(line.label, True, label_colour)
            surface.blit(label, (area.left, y))
            url = _fit(self.body, line.url, area.width - u * 6)
            surface.blit(self.body.render(url, True, _scaled(TEXT, fade)), (area.left + u * 5, y))
        surface.set_clip(clip)

    def _network(self, surface: pygame.Surface, scene: Scene, area: pygame.Rect, t: float) -> None:
        """This peer among its DHT neighbours (a slowly turning ring), and the bundle swarms it
        seeds (one row of peers each)."""
        u = self.unit
        self._text(surface, self.small, "NETWORK", MUTED, topleft=area.topleft)
        radius = min(area.height // 2 - u, u * 3)
        centre = (area.left + radius + u, area.top + u * 2 + radius)
        neighbours = scene.neighbours or ()
        for i in range(len(neighbours)):
            angle = t * 0.05 + 2 * math.pi * i / len(neighbours)
            point = (round(centre[0] + radius * math.cos(angle)), round(centre[1] + radius * math.sin(angle)))
            pygame.draw.line(surface, PANEL, centre, point)
            pygame.draw.circle(surface, MUTED, point, max(2, u // 5))
        pygame.draw.circle(surface, STATE_COLOURS.get(scene.state, MUTED), centre, max(3, u // 2))
        if scene.neighbours is None:
            ring = "no DHT: one coordinator given"
        else:
            ring = f"{len(neighbours)} DHT neighbour{'' if len(neighbours) == 1 else 's'}"
        x = centre[0] + radius + u * 2
        self._text(surface, self.small, ring, MUTED, topleft=(x, area.top + u * 2))
        y = area.top + round(u * 3.6)
        if not scene.swarms:
            self._text(surface, self.small, "no bundles seeded yet", MUTED, topleft=(x, y))
        for swarm in scene.swarms[: max(1, (area.bottom - y) // (u * 2))]:
            label = f"{swarm.label}: {swarm.peers} peer{'' if swarm.peers == 1 else 's'}"
            self._text(surface, self.small, label, TEXT, topleft=(x, y))
            dots_from = x + self.small.size(label)[0] + u
            dots = min(swarm.peers, max(0, (area.right - dots_from) // u))
            row = y + u // 2
            if dots:
                pygame.draw.line(surface, PANEL, (dots_from, row), (dots_from + (dots - 1) * u, row))
            for d in range(dots):
                pygame.draw.circle(surface, TONES["good"], (dots_from + d * u, row), max(2, u // 4))
            y += u * 2

    def _side(self, surface: pygame.Surface, scene: Scene, area: pygame.Rect) -> None:
        u = self.unit
        y = area.top
        counts: tuple[tuple[str, int, Tone], ...] = (("ok", scene.ok, "good"), ("broken", scene.broken, "bad"))
        for label, value, tone in counts:
            x = area.left if label == "ok" else area.left + area.width // 2
            self._text(surface, self.big, f"{value:,}", TONES[tone], topleft=(x, y))
            self._text(surface, self.small, f"LINKS {label.upper()}", MUTED, topleft=(x, y + u * 3))
        y += u * 5
        units = f"{scene.units_done:,} units done" + (f", {scene.units_failed:,} failed" if scene.units_failed else "")
        self._text(surface, self.small, units, MUTED, topleft=(area.left, y))
        y += u * 2
        for gauge in scene.gauges:
            self._text(surface, self.small, gauge.label.upper(), MUTED, topleft=(area.left, y))
            self._text(surface, self.small, gauge.text, TEXT, topright=(area.right, y))
            bar = pygame.Rect(area.left, y + round(u * 1.2), area.width, max(4, u // 2))
            pygame.draw.rect(surface, PANEL, bar, border_radius=bar.height // 2)
            fraction = gauge.fraction
            if fraction is not None and fraction > 0:
                full = bar.copy()
                full.width = max(bar.height, round(bar.width * fraction))
                colour = TONES["good"] if fraction < 0.8 else TONES["warn"] if fraction < 0.98 else TONES["bad"]
                pygame.draw.rect(surface, colour, full, border_radius=bar.height // 2)
            y += u * 3
        y += u
        self._text(surface, self.small, "WEBSITES NOW", MUTED, topleft=(area.left, y))
        y += round(u * 1.5)
        hosts = scene.hosts or ("none right now",)
        for host in hosts[: max(1, (area.bottom - y - u * 3) // round(u * 1.6))]:
            colour = TEXT if scene.hosts else MUTED
            self._text(surface, self.body, _fit(self.body, host, area.width), colour, topleft=(area.left, y))
            y += round(u * 1.6)
        if scene.coordinator:
            self._text(surface, self.small, f"coordinator {scene.coordinator}", MUTED, bottomleft=area.bottomleft)

    @staticmethod
    def _text(
        surface: pygame.Surface,
        font: pygame.font.Font,
        text: str,
        colour: tuple[int, int, int],
        **where: tuple[int, int],
    ) -> None:
        rendered = font.render(_drawable(text), True, colour)
        surface.blit(rendered, rendered.get_rect(**where))


def _gradient(size: tuple[int, int]) -> pygame.Surface:
    width, height = size
    surface = pygame.Surface(size)
    for y in range(height):
        mix = y / max(height - 1, 1)
        colour = tuple(round(a + (b - a) * mix) for a, b in zip(BACKGROUND_TOP, BACKGROUND_BOTTOM, strict=True))
        pygame.draw.line(surface, colour, (0, y), (width, y))
    return surface


def _scaled(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """`colour` faded toward the background by `factor` (1: as it is)."""
    return tuple(round(b + (c - b) * factor) for c, b in zip(colour, BACKGROUND_TOP, strict=True))  # type: ignore[return-value]


def _drawable(text: str) -> str:
    """SDL_ttf refuses text with a NUL in it; a status document may hold one anywhere."""
    return text.replace("\0", "\ufffd")


def _fit(font: pygame.font.Font, text: str, width: int) -> str:
    """`text`, cut in the middle with an ellipsis when it is wider than `width` pixels."""
    text = _drawable(text)
    if font.size(text)[0] <= width:
        return text
    keep = len(text)
    while keep > 4 and font.size(text[: keep // 2] + "…" + text[len(text) - keep // 2 :])[0] > width:
        keep -= 2
    return text[: keep // 2] + "…" + text[len(text) - keep // 2 :]


def _wrap(font: pygame.font.Font, text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in _drawable(text).split():
        if lines and font.size(f"{lines[-1]} {word}")[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
