"""Search results as pictures: one row per query (the query, then its ranked results), as PNG or HTML.

Images show as thumbnails and texts as wrapped text. Where relevance is known (both sides have labels), a result
is framed green when it shares a class with the query and red when not; otherwise grey.
"""
from __future__ import annotations

import base64
import html
import io
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from PIL import Image  # noqa: E402

from retrieval.results import Hit, Result  # noqa: E402
from utils.errors import UserError  # noqa: E402

GALLERY_SUFFIXES = (".png", ".html")
FRAME_COLOURS = {True: "#1a9e3a", False: "#d62728", None: "#9a9a9a"}
THUMBNAIL_PIXELS = 160
CELL_INCHES = 1.35


def check_gallery_path(path: str | Path) -> None:
    """UserError unless the file name ends in .png or .html."""
    if Path(path).suffix.lower() not in GALLERY_SUFFIXES:
        raise UserError(f"--gallery {path}: the file name must end in .png or .html")


def _thumbnail(path: str) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            return image
    except Exception:  # a file that vanished or broke since indexing: drawn as a blank cell
        return None


# ===================================================================== PNG (matplotlib)
def _frame(ax: Axes, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def draw_cell(ax: Axes, kind: str, value: str, colour: str, frame_width: float = 3.0, wrap: int = 20) -> None:
    """One grid cell: an image thumbnail (`kind` "image") or wrapped text, framed in `colour`."""
    image = _thumbnail(value) if kind == "image" else None
    if image is not None:
        ax.imshow(image)
    else:
        text = value if kind == "text" else f"(cannot read)\n{Path(value).name}"
        ax.text(0.5, 0.5, textwrap.fill(text, wrap), ha="center", va="center", fontsize=6, transform=ax.transAxes)
        ax.set_box_aspect(1)
    _frame(ax, colour, frame_width)


def draw_results(results: list[Result], path: str | Path, dpi: int = 150, annotate: bool = True) -> None:
    """The results as a grid image (format from the suffix: png, pdf, svg...), written atomically.

    `annotate` titles each result with its rank and Hamming distance and adds its labels below; without it
    (the paper figure) only the first row has column titles.
    """
    columns = 1 + max(len(result.hits) for result in results)
    row_inches = CELL_INCHES + (0.35 if annotate else 0.1)
    figure, axes = plt.subplots(len(results), columns, squeeze=False,
                                figsize=(CELL_INCHES * columns, row_inches * len(results)))
    for number, (row, result) in enumerate(zip(axes, results)):
        query = result.query
        draw_cell(row[0], query.kind, query.value, "black", frame_width=1.0)
        if annotate or number == 0:
            row[0].set_title("query", fontsize=8)
        result_kind = "image" if result.target == "images" else "text"
        for ax, hit in zip(row[1:], result.hits):
            draw_cell(ax, result_kind, hit.item, FRAME_COLOURS[hit.relevant])
            if annotate:
                ax.set_title(f"#{hit.rank}  d={hit.distance}", fontsize=7)
                if hit.labels is not None:
                    ax.set_xlabel(textwrap.fill(", ".join(hit.labels), 24), fontsize=6)
            elif number == 0:
                ax.set_title(f"top {hit.rank}", fontsize=8)
        for ax in row[1 + len(result.hits):]:
            ax.axis("off")
    figure.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
        tmp.replace(path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)


# ===================================================================== HTML
def _image_tag(path: str) -> str:
    image = _thumbnail(path)
    if image is None:
        return f'<div class="text">(cannot read) {html.escape(Path(path).name)}</div>'
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" title="{html.escape(path)}">'


def _cell(kind: str, value: str) -> str:
    return _image_tag(value) if kind == "image" else f'<div class="text">{html.escape(value)}</div>'


def _hit_cell(hit: Hit, kind: str) -> str:
    labels = f"<br>{html.escape(', '.join(hit.labels))}" if hit.labels is not None else ""
    return (f'<td style="border-color:{FRAME_COLOURS[hit.relevant]}">{_cell(kind, hit.item)}'
            f'<div class="meta">#{hit.rank} d={hit.distance} id {hit.id}{labels}</div></td>')


def results_html(results: list[Result]) -> str:
    """A self-contained page (thumbnails embedded) with one table row per query."""
    rows = []
    for result in results:
        kind = "image" if result.target == "images" else "text"
        cells = "".join(_hit_cell(hit, kind) for hit in result.hits)
        rows.append(f'<tr><td class="query">{_cell(result.query.kind, result.query.value)}'
                    f'<div class="meta">query</div></td>{cells}</tr>')
    style = ("body{font-family:sans-serif} table{border-collapse:separate;border-spacing:6px} "
             "td{border:4px solid;vertical-align:top;text-align:center;width:170px;padding:2px} "
             "td.query{border-color:#000} .text{font-size:13px;padding:6px} .meta{font-size:11px;color:#444} "
             "img{width:160px;height:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>search results</title>"
            f"<style>{style}</style></head><body><table>\n" + "\n".join(rows) + "\n</table></body></html>\n")


def write_gallery(results: list[Result], path: str | Path) -> None:
    """Draw `results` to a .png or .html file."""
    check_gallery_path(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".html":
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(results_html(results), "utf-8")
        tmp.replace(path)
    else:
        draw_results(results, path)
