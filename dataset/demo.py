"""The built-in synthetic demo dataset: coloured shapes on a dark background, captions naming them.

Items are 64x64 images of 1-3 distinct shapes out of 12 classes; colour is a distractor (not
part of the label). Captions name the shapes in varied sentences with synonyms. Labels are the
12-dim multi-hot shape sets. The data is drawn deterministically from a seed and written in the
standard three-file format (category family, relative image paths), so the normal loader reads
it. Chance-level mAP (mean fraction of relevant database items per query) is about 0.30.

    python -m dataset.demo [--save-dir dataset/demo] [--num-items 2500] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw
from tqdm import tqdm

from dataset.mat import write_pair_table
from utils.errors import UserError

CLASSES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "heart", "crescent", "arrow", "bar",
           "semicircle")
SYNONYMS = {
    "circle": ("circle", "disc", "dot", "round shape"), "square": ("square", "box", "block"),
    "triangle": ("triangle", "three-sided shape"), "star": ("star", "five-pointed star"),
    "cross": ("cross", "plus sign", "plus"), "diamond": ("diamond", "rhombus", "lozenge"),
    "ring": ("ring", "donut", "hoop"), "heart": ("heart", "love heart"), "crescent": ("crescent", "moon"),
    "arrow": ("arrow", "pointer"), "bar": ("bar", "rectangle", "stripe"),
    "semicircle": ("semicircle", "half circle", "half disc"),
}
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 220, 50),
           "purple": (150, 60, 200), "orange": (245, 140, 30), "cyan": (40, 210, 220), "white": (235, 235, 235),
           "pink": (245, 130, 190)}
TEMPLATES = ("{}", "a photo of {}", "there is {}", "{} on a dark background", "this image contains {}",
             "a drawing of {}", "an image showing {}", "we can see {}", "a picture with {}")
FREE_ROTATION = {"arrow", "crescent", "semicircle"}
NO_ROTATION = {"circle", "ring"}
SIZE = 64
SCALE = 2  # drawn at 2x and box-downsampled
GENERATOR_VERSION = 1


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Unit-radius outline of a polygonal shape, centred at the origin."""
    if kind == "square":
        return [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    if kind == "triangle":
        return [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if kind == "star":
        return [((1.0 if i % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (1.0 if i % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    if kind == "cross":
        a, b = 0.3, 0.95
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a),
                (-a, -a)]
    if kind == "diamond":
        return [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    if kind == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17, -y / 17 + 0.1))
        return pts
    if kind == "arrow":
        return [(-1, -0.18), (0.25, -0.18), (0.25, -0.5), (1, 0), (0.25, 0.5), (0.25, 0.18), (-1, 0.18)]
    if kind == "bar":
        return [(-1, -0.28), (1, -0.28), (1, 0.28), (-1, 0.28)]
    if kind == "semicircle":
        return [(math.cos(math.pi * i / 24), -math.sin(math.pi * i / 24) + 0.35) for i in range(25)]
    raise ValueError(kind)


def _draw_shape(mask: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, angle: float) -> None:
    """Draw one shape (value 255) into a mask, in canvas pixels."""
    if kind == "circle":
        mask.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif kind == "ring":
        mask.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(2, int(0.38 * r)))
    elif kind == "crescent":
        mask.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox, oy = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
        mask.ellipse((ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r), fill=0)
    else:
        c, s = math.cos(angle), math.sin(angle)
        mask.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _polygon(kind)], fill=255)


def _place(rng: np.random.Generator, count: int) -> list[tuple[float, float, float]]:
    """Centres and radii (fractions of the side) with rejection sampling against overlaps."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        lo, hi = (0.16, 0.30) if count == 1 else (0.14, 0.24)
        r = rng.uniform(lo, hi)
        for _ in range(50):
            x, y = rng.uniform(r, 1 - r, size=2)
            if all(math.hypot(x - px, y - py) > 0.9 * (r + pr) for px, py, pr in placed):
                break
        placed.append((x, y, r))
    return placed


def _noun_phrase(rng: np.random.Generator, kind: str, colour: str) -> str:
    words = [str(rng.choice(SYNONYMS[kind]))]
    if rng.random() < 0.6:
        words.insert(0, colour)
    if rng.random() < 0.85:
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
    else:
        words.insert(0, "one")
    return " ".join(words)


def _caption(rng: np.random.Generator, phrases: list[str]) -> str:
    order = [phrases[i] for i in rng.permutation(len(phrases))]
    if len(order) == 1:
        body = order[0]
    elif len(order) == 2:
        body = f"{order[0]} {rng.choice(['and', 'next to', 'beside', 'with', 'and also'])} {order[1]}"
    else:
        pattern = rng.integers(3)
        body = [f"{order[0]}, {order[1]} and {order[2]}", f"{order[0]}, {order[1]}, and {order[2]}",
                f"{order[0]} next to {order[1]} and {order[2]}"][pattern]
    return str(rng.choice(TEMPLATES)).format(body)


def draw_item(rng: np.random.Generator) -> tuple[Image.Image, str, np.ndarray]:
    """One image, its caption and its 12-dim multi-hot label."""
    count = int(rng.integers(1, 4))
    kinds = [CLASSES[i] for i in rng.choice(len(CLASSES), size=count, replace=False)]
    side = SIZE * SCALE
    grey = rng.uniform(0, 80)
    background = np.clip(grey + rng.uniform(-15, 15, size=3), 0, 255)
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in background))
    phrases = []
    for kind, (x, y, r) in zip(kinds, _place(rng, count)):
        colour = str(rng.choice(list(COLOURS)))
        rgb = tuple(int(np.clip(v + rng.uniform(-20, 20), 0, 255)) for v in COLOURS[colour])
        if kind in FREE_ROTATION:
            angle = rng.uniform(0, 2 * math.pi)
        elif kind in NO_ROTATION:
            angle = 0.0
        else:
            angle = rng.uniform(-1, 1) * rng.uniform(0.2, 0.35)
        mask = Image.new("L", (side, side), 0)
        _draw_shape(ImageDraw.Draw(mask), kind, x * side, y * side, r * side, angle)
        canvas.paste(Image.new("RGB", (side, side), rgb), mask=mask)
        phrases.append(_noun_phrase(rng, kind, colour))
    small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32) + rng.normal(0, 8, size=(SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    label = np.zeros(len(CLASSES), dtype=np.float32)
    label[[CLASSES.index(k) for k in kinds]] = 1
    return image, _caption(rng, phrases), label


MARKER = "demo.json"  # marks a folder as the generator's own: it writes into no other non-empty folder


def _marker(num_items: int, seed: int, complete: bool) -> dict:
    return {"generator_version": GENERATOR_VERSION, "num_items": num_items, "seed": seed, "complete": complete}


def read_marker(save_dir: Path) -> dict | None:
    """The demo marker of `save_dir`, or None when the folder is not marked as demo data.

    Markers written before the `complete` field existed were written last, so they mean complete data.
    """
    path = save_dir / MARKER
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or "generator_version" not in content:
        return None
    return {"complete": True, **content}


def _write_marker(path: Path, marker: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(marker), encoding="utf-8")
    tmp.replace(path)


def _claim(save_dir: Path) -> None:
    """Refuse a folder that holds anything the demo generator did not write (real data, say)."""
    if save_dir.exists() and not save_dir.is_dir():
        raise UserError(f"{save_dir} is a file, not a folder for the demo data; pick another folder")
    if not save_dir.is_dir() or read_marker(save_dir) is not None:
        return
    foreign = sorted(entry.name for entry in save_dir.iterdir())
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"{save_dir} holds files the demo generator did not write ({shown}); it writes the demo "
                        f"data only into a new or empty folder, or one marked by its {MARKER}: pass another folder "
                        "(--data-dir, or --save-dir of python -m dataset.demo)")


def generate_demo(save_dir: str | Path, num_items: int = 2500, seed: int = 0, progress: bool = True) -> Path:
    """Write the demo dataset to `save_dir` (images/ + index/caption/label .mat); reuse it if already there.

    Only a new or empty folder, or one marked by `demo.json` (written before anything else), is written to;
    any other folder is refused with a UserError, so real data is never overwritten. A lock file beside the
    folder (`<save_dir>.lock`) serialises concurrent calls (torchrun ranks, parallel sweep cells): the first
    writes the data, the others wait and reuse it.
    """
    save_dir = Path(save_dir)
    marker_path = save_dir / MARKER
    try:
        save_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the demo data folder {save_dir}: {exc.strerror}") from None
    with FileLock(f"{save_dir}.lock"):
        if read_marker(save_dir) == _marker(num_items, seed, complete=True):
            return save_dir
        _claim(save_dir)
        (save_dir / "images").mkdir(parents=True, exist_ok=True)
        _write_marker(marker_path, _marker(num_items, seed, complete=False))
        rng = np.random.default_rng(seed)
        paths, captions, labels = [], [], []
        for i in tqdm(range(num_items), desc="generating demo data", disable=not progress, leave=False):
            image, caption, label = draw_item(rng)
            relative = f"images/{i:05d}.png"
            image.save(save_dir / relative)
            paths.append(relative)
            captions.append([caption])
            labels.append(label)
        write_pair_table(save_dir, paths, captions, np.stack(labels), label_key="category", caption_layout="cells",
                         class_names=CLASSES)
        _write_marker(marker_path, _marker(num_items, seed, complete=True))
    return save_dir


def ensure_demo(save_dir: str | Path, num_items: int = 2500, progress: bool = True) -> Path:
    """The demo data in `save_dir`: generated if absent, incomplete or written by another generator version.

    An existing complete demo folder of any size is reused (tests write small ones with :func:`generate_demo`).
    """
    save_dir = Path(save_dir)
    marker = read_marker(save_dir)
    if (marker and marker["generator_version"] == GENERATOR_VERSION and marker["complete"]
            and (save_dir / "index.mat").is_file()):
        return save_dir
    if marker:
        num_items = marker.get("num_items", num_items)
    return generate_demo(save_dir, num_items, seed=marker.get("seed", 0) if marker else 0, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataset.demo", description="Write the synthetic demo dataset.")
    parser.add_argument("--save-dir", default="dataset/demo")
    parser.add_argument("--num-items", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = generate_demo(args.save_dir, args.num_items, args.seed)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"demo dataset in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
