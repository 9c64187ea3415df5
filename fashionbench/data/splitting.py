"""A seeded train/val/test split per category in the course's proportions.

For sources that publish no split (a labelled CSV, an unsplit folder tree) each category
is split on its own, in the proportions of COURSE_SPLIT_SIZES, so that uneven classes keep
their share in every split (stratified, as scikit-learn's ``train_test_split(stratify=)``).
"""

from __future__ import annotations

import numpy as np

from fashionbench.data.catalogue import CATEGORIES, COURSE_SPLIT_SIZES, SPLITS


def split_counts(n: int, proportions: tuple[int, int, int]) -> tuple[int, int, int]:
    """``n`` items divided by ``proportions`` (largest remainder), every split >= 1 when n >= 3."""
    shares = np.asarray(proportions, dtype=np.float64) / sum(proportions) * n
    counts = np.floor(shares).astype(int)
    for position in np.argsort(-(shares - counts), kind="stable")[: n - counts.sum()]:
        counts[position] += 1
    if n >= len(SPLITS):
        for position in range(len(SPLITS)):
            if counts[position] == 0:  # take one from the largest split
                counts[int(np.argmax(counts))] -= 1
                counts[position] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def stratified_course_split(categories: list[str] | np.ndarray, seed: int) -> np.ndarray:
    """The split ("train", "val", "test") of each item, given each item's category.

    The same categories and seed give the same split; one category's split does not depend
    on the other categories' items.
    """
    categories = np.asarray(categories, dtype=object)
    splits = np.empty(len(categories), dtype=object)
    for number, category in enumerate(CATEGORIES):
        members = np.flatnonzero(categories == category)
        if len(members) == 0:
            continue
        rng = np.random.default_rng([seed, number])
        shuffled = members[rng.permutation(len(members))]
        n_train, n_val, _ = split_counts(len(members), COURSE_SPLIT_SIZES[category])
        splits[shuffled[:n_train]] = "train"
        splits[shuffled[n_train:n_train + n_val]] = "val"
        splits[shuffled[n_train + n_val:]] = "test"
    return splits
