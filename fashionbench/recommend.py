"""``python -m fashionbench.recommend``: what the champion recommends to a user, or for photos.

    python -m fashionbench.recommend --user user-0003
    python -m fashionbench.recommend --images my_dress.jpg my_skirt.png --k 4 --out picks.png
    python -m fashionbench.recommend --user user-0003 --version 2          # a given version
    python -m fashionbench.recommend --user user-0003 --run <run id>       # a run, unregistered

Loads ``models:/<model name>@champion`` (or the given alias, version or run), prints the
top-k shop items per category, and writes an image grid: the favourites (or the photos) in
a row, the recommendations with their distances below — the course's "Input-Output
examples". A registered model carries its shop, users and indexes, so nothing but the
registry is read. Plain argparse, as for ``promote``: it queries, it composes no experiment.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # noqa: E402

from fashionbench.artifacts import HEADLINE_METRIC, ArtifactError  # noqa: E402
from fashionbench.data import CATEGORIES  # noqa: E402
from fashionbench.data.images import UnusableImage, decode_image  # noqa: E402
from fashionbench.read_side import ReadSideOptionError, add_store_arguments, store_settings  # noqa: E402
from fashionbench.serving.bundle import build_bundle  # noqa: E402
from fashionbench.serving.recommender import DEFAULT_MODEL_NAME, BundleError, Recommendations, ShopRecommender  # noqa: E402
from fashionbench.tracking.registry import check_registered, load_recommender  # noqa: E402
from fashionbench.tracking.settings import TrackingSettings  # noqa: E402
from fashionbench.tracking.store import StoredRun, experiment_runs, require_store  # noqa: E402

# One grid cell: a picture and a two-line caption, in inches at GRID_DPI; a strip for the title.
CELL_WIDTH_IN, CELL_HEIGHT_IN, TITLE_HEIGHT_IN, GRID_DPI = 1.6, 1.9, 0.4, 100


@dataclass(frozen=True)
class GridRow:
    """One row of the picture grid: a label and (image, caption) cells."""

    label: str
    cells: list[tuple[np.ndarray, str]]


def grid_size_px(n_rows: int, n_columns: int) -> tuple[int, int]:
    """Width and height in pixels of a grid of ``n_rows`` x ``n_columns`` cells."""
    return (round(n_columns * CELL_WIDTH_IN * GRID_DPI),
            round((n_rows * CELL_HEIGHT_IN + TITLE_HEIGHT_IN) * GRID_DPI))


def draw_grid(rows: Sequence[GridRow], path: Path, title: str = "") -> Path:
    """Draw ``rows`` as a grid PNG of exactly ``grid_size_px(len(rows), widest row)`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_columns = max(len(row.cells) for row in rows)
    width, height = grid_size_px(len(rows), n_columns)
    figure, axes = plt.subplots(len(rows), n_columns, figsize=(width / GRID_DPI, height / GRID_DPI),
                                squeeze=False, layout="constrained")
    for row, row_axes in zip(rows, axes):
        for column, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if column < len(row.cells):
                image, caption = row.cells[column]
                ax.imshow(image)
                ax.set_xlabel(caption, fontsize=7)
            else:
                ax.axis("off")
        row_axes[0].set_ylabel(row.label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=GRID_DPI)  # no bbox_inches="tight": the size stays as promised
    plt.close(figure)
    return path


def user_grid(recommender: ShopRecommender, favourites: list[str], recommendations: Recommendations,
              max_favourites: int = 8) -> list[GridRow]:
    """Per category the user has favourites in: a row of favourites, a row of recommendations."""
    rows = []
    for category in CATEGORIES:
        liked = [item for item in favourites if recommender.category_of(item) == category]
        if not liked:
            continue
        shown = liked[:max_favourites]
        label = f"{category}: favourites" + (f" ({len(shown)} of {len(liked)})" if len(liked) > len(shown) else "")
        rows.append(GridRow(label, [(recommender.image_of(item), item) for item in shown]))
        picks = recommendations.table[recommendations.table["category"] == category].sort_values("rank")
        rows.append(GridRow(f"{category}: recommended", [
            (recommender.image_of(pick.item_id), f"{pick.item_id}\nd={pick.distance:.3f}")
            for pick in picks.itertuples()]))
    return rows


def image_grid(recommender: ShopRecommender, images: np.ndarray, names: list[str],
               recommendations: Recommendations) -> list[GridRow]:
    """Per photo: a row with the photo followed by its recommendations."""
    rows = []
    for image, name in zip(images, names):
        picks = recommendations.table[recommendations.table["query"] == name].sort_values("rank")
        category = picks["category"].iat[0] if len(picks) else "?"
        rows.append(GridRow(f"photo -> {category}", [(image, name)] + [
            (recommender.image_of(pick.item_id), f"{pick.item_id}\nd={pick.distance:.3f}")
            for pick in picks.itertuples()]))
    return rows


def load_image_files(paths: Sequence[Path], size: int) -> np.ndarray:
    """Read image files as uint8 RGB of ``size`` pixels, decoded exactly as the catalogue's
    photos were (``data.images.decode_image``), so a query looks to the model like a shop item.

    Raises BundleError naming the file that is missing or not a usable image.
    """
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path), size)[0])
        except UnusableImage as error:
            if error.reason == "missing_file":
                raise BundleError(f"--images: no file {path}") from None
            raise BundleError(f"--images: {path} is not a readable image ({error})") from None
    return np.stack(images)


def recommendations_text(recommendations: Recommendations) -> str:
    """One line per recommendation: query, category, rank, item, distance."""
    table = recommendations.table.copy()
    table["distance"] = table["distance"].map(lambda d: f"{d:.4f}")
    return table.to_string(index=False)


def open_recommender(settings: TrackingSettings, model_name: str, alias: str | None, version: str | None,
                     run_id: str | None, scratch: Path) -> ShopRecommender:
    """The registered model (by alias or version), or a run's recommender built on the fly."""
    experiment = settings.experiment_name
    require_store(settings)  # reading never creates a store
    if run_id:
        runs = [run for run in experiment_runs(settings) if run.run_id == run_id]
        if not runs:
            raise BundleError(f"--run {run_id}: no such run in experiment {experiment!r} of {settings.uri}")
        return ShopRecommender(build_bundle(StoredRun(settings, runs[0]), scratch, experiment, HEADLINE_METRIC))
    check_registered(settings, model_name, alias, version)  # one line naming what the registry has instead
    uri = f"models:/{model_name}/{version}" if version else f"models:/{model_name}@{alias or 'champion'}"
    return load_recommender(settings, uri)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.recommend",
        description="Recommend shop items for a simulated user or for photos with a registered recommender.",
    )
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--user", help="a simulated user of the model's run, e.g. user-0003")
    query.add_argument("--images", nargs="+", type=Path, metavar="FILE", help="photos to find similar items for")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--alias", default=None, help="registry alias to load (default: champion)")
    source.add_argument("--version", help="registered model version to load")
    source.add_argument("--run", metavar="RUN_ID", help="build the recommender from this run instead")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model (default: %(default)s)")
    add_store_arguments(parser)  # --experiment (of --run), --tracking-uri, overrides of the run's config
    parser.add_argument("--k", type=int, default=None, help="items per category (default: the run's eval.k)")
    parser.add_argument("--category", choices=CATEGORIES, help="with --images: search this category "
                        "instead of the one the classifier predicts")
    parser.add_argument("--out", type=Path, default=Path("reports/recommendations.png"),
                        help="grid PNG (default: %(default)s; reports/ is git-ignored)")
    args = parser.parse_args(argv)
    if args.k is not None and args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    if args.user is not None and not args.user.strip():
        parser.error("--user needs a user id, e.g. user-0003; got an empty one")
    missing = [str(path) for path in args.images or [] if not path.is_file()]
    if missing:  # before the model is loaded, which takes seconds
        print(f"fashionbench.recommend: --images: no file {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory() as scratch:
            recommender = open_recommender(store_settings(args), args.model_name, args.alias, args.version,
                                           args.run, Path(scratch))
            if args.user:
                favourites = recommender.favourites(args.user)
                if not favourites:
                    raise BundleError(f"user {args.user} has no favourites in this shop")
                recommendations = recommender.recommend_for_items(favourites, args.k)
                rows = user_grid(recommender, favourites, recommendations)
                title = f"{args.user}: {len(favourites)} favourites -> top {args.k or recommender.k} per category"
            else:
                size = int(recommender.meta["image_size"])
                images = load_image_files(args.images, size)
                names = [path.name for path in args.images]
                recommendations = recommender.recommend_for_images(images, args.k, args.category, names)
                rows = image_grid(recommender, images, names, recommendations)
                title = f"top {args.k or recommender.k} shop items per photo"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            draw_grid(rows, args.out, f"{title} (run {recommender.source_run_id[:8]})")
    except (ArtifactError, LookupError, ReadSideOptionError) as error:  # LookupError: no such experiment or model
        print(f"fashionbench.recommend: {error}", file=sys.stderr)
        return 1
    print(recommendations_text(recommendations))
    print(f"grid written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
