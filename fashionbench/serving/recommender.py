"""The promoted recommender: everything one run needs to recommend, in one directory (a bundle).

A bundle is what ``promote`` registers in the model registry and what ``recommend`` and the
``mlflow.pyfunc`` wrapper (``tracking.registry``) load back. ``serving.bundle.build_bundle`` writes
it from a run (``serving.bundle.BUNDLE_FILES`` lists its files): the fine-tuned classifier, the
run's config and indexes, the shop's items and images as the model saw them, and the run's
users' ratings, so that recommendations, favourites and the pictures of both need nothing but
the registry.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import ArtifactError
from fashionbench.data import CATEGORIES
from fashionbench.data.artifact_files import load_shop
from fashionbench.data.checksums import read_checksums, verify
from fashionbench.data.images import UnusableImage, decode_image_bytes
from fashionbench.index.store import load_indexes
from fashionbench.serving.bundle import (
    BUNDLE_CHECKSUMS,
    BUNDLE_CLASSIFIER,
    BUNDLE_FILES,
    BUNDLE_INDEXES,
    BUNDLE_META,
    BUNDLE_SHOP_IMAGES,
    BUNDLE_SHOP_ITEMS,
    BUNDLE_USERS,
    LEGACY_BUNDLE_CLASSIFIER,
)
from fashionbench.users.ratings import favourites, load_ratings

# The registered model that promote writes and recommend reads unless told otherwise.
DEFAULT_MODEL_NAME = "fashionbench-recommender"
DEFAULT_ALIAS = "champion"  # the alias promote points at the version it registers


class BundleError(ArtifactError):
    """A recommender bundle (or a query to it) that cannot be used; the message says why."""


@dataclass(frozen=True)
class Recommendations:
    """Top-k shop items per category: one row per (query group, category, rank).

    ``table`` columns: ``query`` (what was asked: the category's query items, space-separated,
    or an image's name),
    ``category``, ``rank`` (1..k), ``item_id``, ``distance`` (Annoy's, smaller is closer).
    """

    table: pd.DataFrame

    def item_ids(self, category: str, query: str | None = None) -> list[str]:
        rows = self.table[self.table["category"] == category]
        if query is not None:
            rows = rows[rows["query"] == query]
        return rows.sort_values("rank")["item_id"].tolist()


class ShopRecommender:
    """Recommends shop items like given favourites (item ids) or photos, per category."""

    def __init__(self, directory: Path) -> None:
        missing = [name for name in BUNDLE_FILES if not (directory / name).exists()
                   and not (name == BUNDLE_CLASSIFIER and (directory / LEGACY_BUNDLE_CLASSIFIER).exists())]
        if missing:
            raise BundleError(f"{directory} is not a recommender bundle: {missing} missing")
        if (directory / BUNDLE_CHECKSUMS).exists():  # every file as promote wrote it: never a damaged one served
            try:
                verify(directory, read_checksums(directory / BUNDLE_CHECKSUMS, f"bundle {directory}"),
                       f"bundle {directory}: ")
            except ArtifactError as error:
                raise BundleError(str(error)) from None
        self.directory = directory
        self.meta = json.loads((directory / BUNDLE_META).read_text())
        self.shop = load_shop(directory / BUNDLE_SHOP_ITEMS, directory / BUNDLE_SHOP_IMAGES)
        self.indexes = load_indexes(directory / BUNDLE_INDEXES)
        self.ratings = load_ratings(directory / BUNDLE_USERS)
        self._positions = {item_id: i for i, item_id in enumerate(self.shop.items["item_id"])}
        self._classifier = None
        self._embedder = None

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def source_run_id(self) -> str:
        return str(self.meta["source_run_id"])

    @property
    def user_ids(self) -> list[str]:
        return sorted(self.ratings["user_id"].unique().tolist())

    def favourites(self, user_id: str) -> list[str]:
        """The items ``user_id`` rated at least the favourite threshold; BundleError for an unknown user."""
        rows = self.ratings[self.ratings["user_id"] == user_id]
        if rows.empty:
            known = self.user_ids
            raise BundleError(f"unknown user {user_id!r}; this model's simulated users are "
                              f"{known[0]} .. {known[-1]} ({len(known)} users)")
        threshold = self.meta["favourite_threshold"]
        return favourites(rows, float("-inf") if threshold is None else float(threshold))["item_id"].tolist()

    def category_of(self, item_id: str) -> str:
        return str(self.shop.items["category"].iat[self._position(item_id)])

    def image_of(self, item_id: str) -> np.ndarray:
        return self.shop.images[self._position(item_id)]

    def answer(self, request: pd.DataFrame, k: int | None = None, category: str | None = None) -> Recommendations:
        """A served request: rows with an ``item_id`` are favourites (top-k per category of
        them), rows with an ``image`` (encoded bytes: JPEG, PNG...) are photos (top-k each, in
        ``category`` or the one the classifier predicts). Raises BundleError (an unknown item, a
        photo that is not an image, a request with neither column) with a one-line reason."""
        columns = [c for c in ("item_id", "image") if c in request.columns]
        if not columns or request.empty or not any(request[c].notna().any() for c in columns):
            raise BundleError("the request needs rows with an item_id (shop items: favourites) or an image "
                              "(encoded bytes of a photo)")
        if category and category not in self.indexes:
            raise BundleError(f"unknown category {category!r}; expected one of {sorted(self.indexes)}")
        tables = []
        if "item_id" in request.columns and request["item_id"].notna().any():
            tables.append(self.recommend_for_items([str(i) for i in request["item_id"].dropna()], k).table)
        if "image" in request.columns and request["image"].notna().any():
            size = int(self.meta["image_size"])
            names, images = [], []
            for row, data in request["image"].dropna().items():
                name = f"image {row}"
                try:
                    images.append(decode_image_bytes(_as_bytes(data), size, name)[0])
                except UnusableImage as error:
                    raise BundleError(f"{name}: not a usable image ({error.reason}: {error.detail})") from None
                names.append(name)
            tables.append(self.recommend_for_images(np.stack(images), k, category, names).table)
        return Recommendations(pd.concat(tables, ignore_index=True))

    def recommend_for_items(self, item_ids: list[str], k: int | None = None) -> Recommendations:
        """The k nearest shop items per category of the given items, the items themselves
        excluded: exactly what the run's evaluation asked of its indexes (CategoryIndex.recommend)."""
        k = k or self.k
        by_category: dict[str, list[str]] = {}
        for item_id in item_ids:
            by_category.setdefault(self.category_of(item_id), []).append(item_id)
        rows = [
            {"query": " ".join(queries), "category": category, "rank": rank, "item_id": item, "distance": distance}
            for category, queries in by_category.items()
            for rank, (item, distance) in enumerate(self.indexes[category].recommend(queries, k), start=1)
        ]
        return Recommendations(_table(rows))

    def recommend_for_images(self, images: np.ndarray, k: int | None = None, category: str | None = None,
                             names: list[str] | None = None) -> Recommendations:
        """The k nearest shop items to each uint8 RGB image (n, h, w, 3) of the model's size, in
        ``category`` or else in the category the classifier predicts for it.

        Raises BundleError for images of the wrong shape or an unknown category.
        """
        from fashionbench.model.classifier import predict_in_batches

        k = k or self.k
        images = np.asarray(images)
        expected = (int(self.meta["image_size"]),) * 2
        if images.ndim != 4 or images.shape[1:] != (*expected, 3):
            raise BundleError(f"images must be uint8 RGB of shape (n, {expected[0]}, {expected[1]}, 3) "
                              f"for this model, got {images.shape}")
        if category and category not in self.indexes:
            raise BundleError(f"unknown category {category!r}; expected one of {sorted(self.indexes)}")
        names = names or [f"image {i + 1}" for i in range(len(images))]
        images = images.astype(np.uint8)
        self._load_networks()
        predicted = predict_in_batches(self._classifier, images).argmax(axis=1)
        vectors = predict_in_batches(self._embedder, images).reshape(len(images), -1)
        rows = []
        for name, vector, label in zip(names, vectors, predicted):
            target = category or CATEGORIES[int(label)]
            for rank, (item, distance) in enumerate(self.indexes[target].nearest_to_vector(vector, k), start=1):
                rows.append({"query": name, "category": target, "rank": rank, "item_id": item, "distance": distance})
        return Recommendations(_table(rows))

    def _load_networks(self) -> None:
        if self._classifier is None:
            import keras

            self._classifier = _load_classifier(self.directory)
            layer = self._classifier.get_layer(self.meta["embedding_layer"])
            self._embedder = keras.Model(self._classifier.input, layer.output)

    def _position(self, item_id: str) -> int:
        try:
            return self._positions[item_id]
        except KeyError:
            raise BundleError(f"item {item_id!r} is not in this model's shop ({len(self.shop)} items, "
                              f"e.g. {self.shop.items['item_id'].iat[0]!r})") from None


def _load_classifier(directory: Path):
    """The bundle's Keras classifier (uncompiled): assembled from its checked parts, or the one
    Keras file of a bundle registered before (or of a run logged whole)."""
    import keras

    from fashionbench.model.parts import WHOLE_MODEL_FILE, assemble, load_classifier_files

    for whole in (directory / LEGACY_BUNDLE_CLASSIFIER, directory / BUNDLE_CLASSIFIER / WHOLE_MODEL_FILE):
        if whole.exists():
            return keras.models.load_model(whole, compile=False)
    try:
        return assemble(*load_classifier_files(directory / BUNDLE_CLASSIFIER))
    except ArtifactError as error:
        raise BundleError(f"{directory / BUNDLE_CLASSIFIER}: {error}") from None


def _as_bytes(data) -> bytes:
    """An image cell as bytes: MLflow's binary columns arrive as bytes (base64 decoded by the
    server); a str is taken as base64."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    try:
        return base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError("an image must be the encoded file's bytes (base64 in JSON)") from None


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query", "category", "rank", "item_id", "distance"])
