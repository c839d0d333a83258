"""Synthetic, seeded dataset of short captioned clips: a coloured shape moving in a captioned
direction over a plain background ("a red circle moving left"), 16 frames of 64x64 pixels.

Styles share the captions:
* "base": light grey background, saturated palette — what the image model and the motion module
  are trained on;
* "personal": cream background, soft palette (coral, mint, sky, amber) — the "personalised" image
  model is fine-tuned on single frames of this style only (never on clips); the VAE is trained on
  frames of both, as SD's VAE can render the styles of personalised models;
* ablations: "night" (dark blue diagonal stripes, pastel palette: a style far from the base's
  features) and "print" (cream paper, faint stripes, ink palette), both outside the VAE's training.

The moving object leaves a short fading trail behind it (a motion streak), so that a single frame
shows the direction the caption names; the displacement over the clip is what only a temporal model
can produce. Everything is numpy, deterministic from (seed, index): clip i of a seed is the same
whatever else is generated.
"""

from __future__ import annotations

import numpy as np

SIZE = 64
FRAMES = 16
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
PALETTES = {
    "base": {
        "red": (0.86, 0.12, 0.10),
        "green": (0.10, 0.66, 0.20),
        "blue": (0.12, 0.28, 0.90),
        "yellow": (0.95, 0.82, 0.08),
    },
    "print": {
        "red": (0.62, 0.08, 0.12),
        "green": (0.10, 0.40, 0.22),
        "blue": (0.12, 0.16, 0.45),
        "yellow": (0.80, 0.55, 0.05),
    },
    "personal": {
        "red": (0.98, 0.50, 0.45),
        "green": (0.40, 0.82, 0.55),
        "blue": (0.40, 0.62, 0.95),
        "yellow": (0.98, 0.80, 0.25),
    },
    "night": {
        "red": (1.00, 0.55, 0.62),
        "green": (0.55, 1.00, 0.62),
        "blue": (0.55, 0.75, 1.00),
        "yellow": (1.00, 0.97, 0.55),
    },
}
COLOURS = tuple(PALETTES["base"])
RADIUS = 8.0
TRAIL = ((1, 0.5), (2, 0.35), (3, 0.22), (4, 0.1))  # (steps of 4 px behind, opacity): a 16 px streak
TRAIL_STEP = 4.0
MARGIN = 11.0


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def all_captions() -> list[str]:
    return [caption(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]


_yy, _xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def shape_mask(shape: str, cx: float, cy: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy)."""
    dx, dy = _xx - cx, _yy - cy
    if shape == "circle":
        sd = np.sqrt(dx * dx + dy * dy) - RADIUS
    elif shape == "square":
        sd = np.maximum(np.abs(dx), np.abs(dy)) - RADIUS * 0.85
    elif shape == "triangle":
        # Upward triangle: base at y = +0.7R, apex at y = -1.1R; signed distance of three half-planes.
        r = RADIUS * 1.15
        e1 = dy - 0.7 * r
        n = np.array([2.0, 1.0]) / np.sqrt(5.0)
        e2 = n[0] * dx + n[1] * (-dy) - 0.55 * r  # right edge
        e3 = -n[0] * dx + n[1] * (-dy) - 0.55 * r  # left edge
        sd = np.maximum(e1, np.maximum(e2, e3))
    else:
        raise ValueError(shape)
    return np.clip(0.5 - sd, 0.0, 1.0)


def background(style: str, rng: np.random.Generator) -> np.ndarray:
    if style == "base":
        tint = 0.84 + rng.uniform(-0.04, 0.04, size=3)
        return np.broadcast_to(tint.astype(np.float32), (SIZE, SIZE, 3)).copy()
    if style == "print":
        phase = rng.uniform(0, 12)
        stripes = (((_xx - _yy + phase) // 5) % 2).astype(np.float32)
        paper = np.array([0.95, 0.91, 0.81], np.float32)
        line = np.array([0.88, 0.83, 0.71], np.float32)
        return paper + stripes[..., None] * (line - paper)
    if style == "personal":
        tint = np.array([0.93, 0.88, 0.80]) + rng.uniform(-0.03, 0.03, size=3)
        return np.broadcast_to(tint.astype(np.float32), (SIZE, SIZE, 3)).copy()
    if style == "night":
        phase = rng.uniform(0, 12)
        stripes = (((_xx + _yy + phase) // 6) % 2).astype(np.float32)
        dark = np.array([0.08, 0.09, 0.22], np.float32)
        light = np.array([0.16, 0.18, 0.36], np.float32)
        return dark + stripes[..., None] * (light - dark)
    raise ValueError(style)


def render(style: str, bg: np.ndarray, colour: str, shape: str, direction: str, cx: float, cy: float) -> np.ndarray:
    """One frame in [0, 1], (H, W, 3)."""
    img = bg.copy()
    rgb = np.array(PALETTES[style][colour], np.float32)
    ux, uy = DIRECTIONS[direction]
    for k, alpha in reversed(TRAIL):
        m = shape_mask(shape, cx - ux * k * TRAIL_STEP, cy - uy * k * TRAIL_STEP)[..., None] * alpha
        img = img * (1 - m) + rgb * m
    m = shape_mask(shape, cx, cy)[..., None]
    return img * (1 - m) + rgb * m


EDGE_JITTER = 2.0  # "edge" layout: the object starts within this many px of its margin


def _params(seed: int, index: int, style: str, layout: str = "edge"):
    """layout "free": the start anywhere that keeps the path inside the frame; "edge": the start
    at the margin the object moves away from (a clip then crosses most of the frame, and the
    caption fixes where each frame's object is along the direction of motion)."""
    rng = np.random.default_rng([seed, index, 0 if style == "base" else 1])
    colour = COLOURS[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    direction = tuple(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    speed = rng.uniform(1.6, 2.2)
    travel = speed * (FRAMES - 1)
    start = rng.uniform(MARGIN, SIZE - MARGIN - travel)
    if layout == "edge":
        start = MARGIN + (start - MARGIN) / (SIZE - 2 * MARGIN - travel) * EDGE_JITTER
    elif layout != "free":
        raise ValueError(layout)
    perp = rng.uniform(MARGIN, SIZE - MARGIN)
    return colour, shape, direction, speed, start, perp, background(style, rng)


def _frame(style: str, params, f: int) -> np.ndarray:
    colour, shape, direction, speed, start, perp, bg = params
    ux, uy = DIRECTIONS[direction]
    along = start + speed * f
    if ux < 0 or uy < 0:
        along = SIZE - along
    cx, cy = (along, perp) if ux != 0 else (perp, along)
    return render(style, bg, colour, shape, direction, cx, cy)


def clip(seed: int, index: int, style: str = "base", layout: str = "edge"):
    """Clip `index` of dataset `seed`: (frames (F, H, W, 3) float32 in [0, 1], caption, labels)."""
    params = _params(seed, index, style, layout)
    colour, shape, direction = params[:3]
    frames = np.stack([_frame(style, params, f) for f in range(FRAMES)]).astype(np.float32)
    return frames, caption(colour, shape, direction), (colour, shape, direction)


def frame(seed: int, index: int, style: str):
    """A single frame (a random frame of clip `index`): (H, W, 3), caption."""
    params = _params(seed, index, style)
    f = int(np.random.default_rng([seed, index, 7]).integers(FRAMES))
    return _frame(style, params, f).astype(np.float32), caption(*params[:3])
