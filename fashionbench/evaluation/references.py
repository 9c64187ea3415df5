"""The reference ladder: recommenders from the floor to a ceiling, scored on the model's own pairs.

A precision@k means little alone. Every run scores, on exactly the (user, category) pairs and
held-out items the model is scored on:

- ``random``: k of the candidates uniformly at random, as an exact expectation (no draw, no noise);
- ``popularity``: the category's items most often favoured by the *other* users (the target
  user's own ratings, queries and held-out items alike, are left out of the counts); for an
  interaction log, only interactions before its cut count (``SimulatedUsers.known_favourites``);
- ``pixels``: nearest items by small colour thumbnails (``eval.pixels_size`` px a side): what raw
  pixels alone give;
- ``untrained``: the same backbone, embedding layer and index, with the weights before
  fine-tuning: is fine-tuning worth it?
- ``oracle``: nearest items by the catalogue's ground-truth attributes (one-hot), or by the
  colour, lightness and saturation measured from the pixels where the source publishes none:
  the attributes the simulated users' tastes are made of, so a ceiling for look-alike search.

``model`` is the fine-tuned network's recommendations (the shop index). Every recommender but
``random`` returns a ranked list for a pair (``recommend(split, k)``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fashionbench.data import Catalogue
from fashionbench.index.base import CategoryIndex, ItemEmbeddings
from fashionbench.index.exact import ExactIndexConfig
from fashionbench.users.simulation import HeldOutFavourites, SimulatedUsers

MODEL = "model"
RANDOM = "random"
POPULARITY = "popularity"
PIXELS = "pixels"
UNTRAINED = "untrained"
ORACLE = "oracle"
# Floor to ceiling, the model in its place; the order of every table and figure.
LADDER = (RANDOM, POPULARITY, PIXELS, UNTRAINED, MODEL, ORACLE)
REFERENCES = tuple(name for name in LADDER if name != MODEL)


@dataclass(frozen=True)
class RandomRecommender:
    """The floor, scored by its exact expectation (``ranking.random_expectations``), never drawn."""

    name: str = RANDOM


@dataclass(frozen=True)
class IndexRecommender:
    """Nearest items to the user's queries in one index per category (``CategoryIndex.recommend``)."""

    name: str
    indexes: Mapping[str, CategoryIndex]

    def recommend(self, split: HeldOutFavourites, k: int) -> list[str]:
        return [item for item, _ in self.indexes[split.category].recommend(split.queries, k)]

    def recommend_all(self, splits: Sequence[HeldOutFavourites], k: int) -> list[list[str]]:
        """``recommend`` for every split, in order: each category's index answers all its splits in
        one ``recommend_many``, so a neighbour search that many users share is made once."""
        of_category: dict[str, list[int]] = {}
        for i, split in enumerate(splits):
            of_category.setdefault(split.category, []).append(i)
        ranked: list[list[str]] = [[] for _ in splits]
        for category, members in of_category.items():
            answers = self.indexes[category].recommend_many([splits[i].queries for i in members], k)
            for i, answer in zip(members, answers, strict=True):
                ranked[i] = [item for item, _ in answer]
        return ranked


class PopularityRecommender:
    """The category's items most often among the other users' favourites, ties by shop order."""

    name = POPULARITY

    def __init__(self, users: SimulatedUsers, shop_items: Mapping[str, list[str]]) -> None:
        favourites = users.known_favourites
        self.shop_items = {category: list(items) for category, items in shop_items.items()}
        self.counts = {category: Counter(group["item_id"]) for category, group in favourites.groupby("category")}
        self.own = {key: set(group["item_id"]) for key, group in favourites.groupby(["user_id", "category"])}

    def recommend(self, split: HeldOutFavourites, k: int) -> list[str]:
        counts = self.counts.get(split.category, Counter())
        own = self.own.get((split.user_id, split.category), set())
        queries = set(split.queries)
        # Sorting is stable, so items with equal counts keep the shop's order.
        candidates = [item for item in self.shop_items[split.category] if item not in queries]
        return sorted(candidates, key=lambda item: -(counts[item] - (item in own)))[:k]


def thumbnail_vectors(images: np.ndarray, size: int) -> np.ndarray:
    """Each uint8 RGB image shrunk to ``size`` x ``size`` (box filter: the mean colour of each
    cell), flattened to a float32 vector in [0, 1]."""
    return np.stack([
        np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX), dtype=np.float32).ravel() / 255
        for image in images
    ])


def vector_indexes(shop: Catalogue, vectors: np.ndarray, metric: str) -> dict[str, CategoryIndex]:
    """Exact indexes per category of the shop over ``vectors`` (one row per shop item)."""
    items = ItemEmbeddings(shop.items["item_id"].to_numpy(), shop.items["category"].to_numpy(),
                           np.asarray(vectors, dtype=np.float32), "reference")
    exact = ExactIndexConfig(metric)
    return {category: exact.build(items.of_category(category)) for category in dict.fromkeys(items.categories)}


def reference_ladder(shop: Catalogue, users: SimulatedUsers, shop_items: Mapping[str, list[str]],
                     untrained: ItemEmbeddings | None, index_config, attribute_vectors: np.ndarray | None,
                     pixels_size: int, names: tuple[str, ...] = REFERENCES) -> list:
    """The references named in ``names`` (in ladder order), built for this shop and these users.

    ``untrained``: the shop embedded before fine-tuning, indexed as the model's embeddings are
    (``index_config``). ``attribute_vectors``: one-hot attributes per shop item for the oracle
    (None: no oracle). Exact search under ``index_config.metric`` for pixels and oracle.
    """
    builders = {
        RANDOM: lambda: RandomRecommender(),
        POPULARITY: lambda: PopularityRecommender(users, shop_items),
        PIXELS: lambda: IndexRecommender(PIXELS, vector_indexes(shop, thumbnail_vectors(shop.images, pixels_size),
                                                                index_config.metric)),
        UNTRAINED: lambda: IndexRecommender(UNTRAINED, {category: index_config.build(untrained.of_category(category))
                                                        for category in shop_items}),
        ORACLE: lambda: IndexRecommender(ORACLE, vector_indexes(shop, attribute_vectors, index_config.metric)),
    }
    available = {UNTRAINED: untrained is not None, ORACLE: attribute_vectors is not None}
    return [builders[name]() for name in LADDER if name in names and available.get(name, True)]
