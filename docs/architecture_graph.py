"""Draw docs/architecture.png: fashionbench's packages in their layers, with every import between them.

    python docs/architecture_graph.py            # from the repository root; writes docs/architecture.png

The layers are read from pyproject.toml's import-linter contract ([tool.importlinter]), top to bottom,
so the picture and the contract cannot drift apart. The imports are read from the code by grimp (the
library import-linter builds on), imports inside functions included. Modules are collapsed to their
package (``fashionbench.tracking.store`` -> ``tracking``); a top-level module stays itself (``config``).
An arrow from A to B means "some module of A imports some module of B"; only such arrows are drawn.

Layout: one row per layer. A row's only box sits left or right of a free centre lane, in turn. An arrow
is straight where that passes through no box of the rows between its ends, else the least bowed curve
that does not (found by trying).
"""

from __future__ import annotations

import io
import tomllib
from collections import Counter
from pathlib import Path

import grimp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as CurvePath  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fashionbench"
INIT = "__init__"  # the package's own __init__.py, which the contract leaves out of its layers

BOX_WIDTH, BOX_HEIGHT, ROW_STEP = 2.0, 0.5, 1.2
SIDE = 2.3  # a lone box's centre, left or right of the centre line
# One colour per importing package (tab10's, then darker ones), so an arrow's colour names its importer.
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#31a354", "#3182bd"]


def contract_layers(pyproject: Path) -> list[list[str]]:
    """The layers of the contract, top to bottom, each a list of short names (``tracking``)."""
    settings = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    (contract,) = [c for c in settings["contracts"] if c["type"] == "layers"]
    return [[name.strip().removeprefix(f"{PACKAGE}.") for name in layer.split("|")] for layer in contract["layers"]]


def package_of(module: str) -> str:
    """``fashionbench.tracking.store`` -> ``tracking``; ``fashionbench.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else INIT


def package_edges(graph: grimp.ImportGraph) -> Counter[tuple[str, str]]:
    """(importer package, imported package) -> how many module-to-module imports make that arrow."""
    edges: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = package_of(module), package_of(imported)
            if a != b:
                edges[(a, b)] += 1
    return edges


def positions(layers: list[list[str]]) -> dict[str, tuple[float, float]]:
    """Box centres: one row per layer, top to bottom; a lone box left or right in turn; two siblings
    one each side; more side by side."""
    where: dict[str, tuple[float, float]] = {}
    lone = 0
    for row, names in enumerate(layers):
        y = -row * ROW_STEP
        if len(names) == 1:
            where[names[0]] = (SIDE if lone % 2 else -SIDE, y)
            lone += 1
        elif len(names) == 2:
            where[names[0]], where[names[1]] = (-SIDE, y), (SIDE, y)
        else:
            step = BOX_WIDTH + 0.3
            for i, name in enumerate(names):
                where[name] = ((i - (len(names) - 1) / 2) * step, y)
    return where


def ports(edges: Counter[tuple[str, str]], where: dict[str, tuple[float, float]]
          ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Where each arrow leaves its importer's bottom edge and reaches its target's top edge, spread
    along the edge in the order of the boxes at the other ends, so that arrows do not meet in a point."""
    leave: dict[tuple[str, str], float] = {}
    reach: dict[tuple[str, str], float] = {}
    for name, (x, _) in where.items():
        outgoing = sorted((pair for pair in edges if pair[0] == name), key=lambda pair: where[pair[1]][0])
        incoming = sorted((pair for pair in edges if pair[1] == name), key=lambda pair: where[pair[0]][0])
        for chosen, slots in ((outgoing, leave), (incoming, reach)):
            gap = 0.85 * BOX_WIDTH / max(len(chosen), 1)
            for i, pair in enumerate(chosen):
                slots[pair] = x + (i + 0.5 - len(chosen) / 2) * gap
    return leave, reach


def bezier(start: tuple[float, float], end: tuple[float, float], shift: float) -> CurvePath:
    """A straight arrow (``shift`` 0), or a curve whose middle lies ``shift`` to the right of the
    straight line's (left when negative)."""
    if shift == 0:
        return CurvePath([start, end], [CurvePath.MOVETO, CurvePath.LINETO])
    apex = ((start[0] + end[0]) / 2 + shift, (start[1] + end[1]) / 2)
    # A quadratic Bezier passes through its apex at t = 1/2 when its control point is 2 apex - (P0 + P2) / 2.
    control = (2 * apex[0] - (start[0] + end[0]) / 2, 2 * apex[1] - (start[1] + end[1]) / 2)
    return CurvePath([start, control, end], [CurvePath.MOVETO, CurvePath.CURVE3, CurvePath.CURVE3])


def crossings(path: CurvePath, boxes: list[tuple[float, float]]) -> int:
    """How many of these boxes (centres) the arrow passes through."""
    points = path.interpolated(40).vertices if len(path.vertices) > 2 else \
        CurvePath([path.vertices[0], path.vertices[-1]]).interpolated(40).vertices
    hit = 0
    for x, y in boxes:
        inside = (abs(points[:, 0] - x) < BOX_WIDTH / 2 + 0.08) & (abs(points[:, 1] - y) < BOX_HEIGHT / 2 + 0.08)
        hit += bool(inside.any())
    return hit


def route(start: tuple[float, float], end: tuple[float, float], boxes: list[tuple[float, float]]) -> CurvePath:
    """The straightest arrow from start to end that passes through none of ``boxes``: straight if it
    can be, else bowed out a little more at each try, away from the centre line first."""
    outward = 1 if (start[0] + end[0]) >= 0 else -1
    tries = [0.0] + [sign * step * 0.3 for step in range(1, 7) for sign in (outward, -outward)]
    best = min(tries, key=lambda shift: (crossings(bezier(start, end, shift), boxes) if boxes else 0,
                                         tries.index(shift)))
    return bezier(start, end, best)


def draw(layers: list[list[str]], edges: Counter[tuple[str, str]], out: Path) -> None:
    where = positions(layers)
    row_of = {name: row for row, names in enumerate(layers) for name in names}
    if any(INIT in pair for pair in edges):  # __init__.py, outside the contract: beside what it imports
        row = max((row_of[b] for a, b in edges if a == INIT and b in row_of), default=len(layers) - 1)
        edge_x = min(where[name][0] for name in layers[row]) - BOX_WIDTH / 2
        where[INIT] = (edge_x - 0.5 - BOX_WIDTH / 2, -row * ROW_STEP)
        row_of[INIT] = row
    unknown = {name for pair in edges for name in pair} - set(where)
    if unknown:
        raise SystemExit(f"packages outside the contract's layers: {sorted(unknown)}; add them to pyproject.toml")

    importers = sorted({a for a, _ in edges}, key=lambda name: (row_of[name], where[name][0]))
    colour_of = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(importers)}
    leave, reach = ports(edges, where)
    reach_out = SIDE + BOX_WIDTH / 2 + 2.0
    left = min(min(x for x, _ in where.values()) - BOX_WIDTH / 2, -reach_out)
    label_x = left - 0.6

    fig, ax = plt.subplots(figsize=(11, 0.9 * len(layers) + 1.0))
    for row in range(len(layers)):  # a faint band per layer, numbered
        ax.add_patch(Rectangle((label_x + 0.35, -row * ROW_STEP - 0.4), 2 * reach_out + 2, 0.8,
                               color="#f2f2f2", zorder=0, linewidth=0))
        ax.text(label_x, -row * ROW_STEP, f"{row + 1}", ha="center", va="center", fontsize=11, color="#555555")

    for (a, b), count in sorted(edges.items(), key=lambda item: (row_of[item[0][0]], item[0])):
        (xa, ya), (xb, yb) = where[a], where[b]
        if row_of[a] == row_of[b]:  # same row (only __init__.py): side to side
            toward = 1 if xa < xb else -1
            path = bezier((xa + toward * BOX_WIDTH / 2, ya), (xb - toward * BOX_WIDTH / 2, yb), 0)
        else:
            between = [where[name] for name in where if row_of[a] < row_of[name] < row_of[b]]
            path = route((leave[(a, b)], ya - BOX_HEIGHT / 2), (reach[(a, b)], yb + BOX_HEIGHT / 2), between)
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=11,
                                     linewidth=0.8 + 0.25 * min(count, 6), color=colour_of[a], alpha=0.85,
                                     zorder=1))

    for name, (x, y) in where.items():
        outside = name == INIT
        folder = not outside and not (ROOT / PACKAGE / f"{name}.py").is_file()
        ax.add_patch(FancyBboxPatch((x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
                                    boxstyle="round,pad=0.02,rounding_size=0.08", zorder=2, facecolor="white",
                                    edgecolor=colour_of.get(name, "#333333"), linewidth=2.2,
                                    linestyle="--" if outside else "-"))
        label = "__init__.py" if outside else (f"{name}/" if folder else f"{name}.py")
        ax.text(x, y, label, ha="center", va="center", fontsize=12, family="monospace", zorder=3,
                weight="bold" if folder else "normal")

    ax.set_xlim(label_x - 0.4, reach_out + 0.4)
    ax.set_ylim(-(len(layers) - 1) * ROW_STEP - 0.45, 0.45)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{PACKAGE}'s layers (pyproject.toml's import-linter contract), top to bottom.\n"
                 f"Bold: a package; plain: a module; dashed: outside the contract. An arrow A \u2192 B, "
                 f"in A's colour:\na module of A imports one of B ({len(edges)} arrows, "
                 f"{sum(edges.values())} module imports; thicker: more of them).", fontsize=11)
    fig.tight_layout()
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=110)
    plt.close(fig)
    # 256 colours are plenty for flat boxes and lines, and a third of the bytes in the repository.
    Image.open(drawn).convert("RGB").quantize(colors=256).save(out, optimize=True)


def main() -> None:
    layers = contract_layers(ROOT / "pyproject.toml")
    edges = package_edges(grimp.build_graph(PACKAGE, cache_dir=None))
    out = ROOT / "docs" / "architecture.png"
    draw(layers, edges, out)
    print(f"{out.relative_to(ROOT)}: {sum(len(names) for names in layers)} boxes in {len(layers)} layers, "
          f"{len(edges)} arrows")


if __name__ == "__main__":
    main()
