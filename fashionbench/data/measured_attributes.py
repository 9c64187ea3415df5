"""Attributes measured from pixels, for sources that publish none (e.g. plain photo folders).

Taste users need attributes to have a taste over. Where a source gives no ground truth,
these stand in: the garment's colour family, lightness and saturation (HSV medians of the
pixels that stand out from the background).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fashionbench.data.catalogue import ATTRIBUTE_PREFIX

HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
NEUTRAL_SATURATION = 0.2  # below this median saturation a garment has no colour family
BACKGROUND_DISTANCE = 40.0  # RGB distance from the border colour that marks a garment pixel


def measured_attributes(images: np.ndarray) -> pd.DataFrame:
    """``attr_colour``, ``attr_lightness``, ``attr_saturation`` for uint8 RGB images (n, h, w, 3)."""
    hsv = np.array([_garment_hsv(image) for image in images]).reshape(len(images), 3)
    hue, saturation, value = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    colour = np.where(
        saturation < NEUTRAL_SATURATION,
        np.where(value < 0.3, "black", np.where(value > 0.75, "white", "grey")),
        np.array(HUES)[(np.floor(hue * len(HUES) + 0.5).astype(int)) % len(HUES)],
    )
    return pd.DataFrame({
        f"{ATTRIBUTE_PREFIX}colour": colour,
        f"{ATTRIBUTE_PREFIX}lightness": np.select([value < 0.35, value < 0.7], ["dark", "medium"], "light"),
        f"{ATTRIBUTE_PREFIX}saturation": np.where(saturation < 0.45, "muted", "vivid"),
    })


def _garment_hsv(image: np.ndarray) -> np.ndarray:
    """Median HSV of the pixels that differ from the background (the border's median colour);
    the central region when too few do."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    foreground = np.linalg.norm(pixels - np.median(border, axis=0), axis=-1) > BACKGROUND_DISTANCE
    if foreground.mean() < 0.05:
        height, width = foreground.shape
        foreground[height // 4: height - height // 4, width // 4: width - width // 4] = True
    from matplotlib.colors import rgb_to_hsv  # here: the config imports this module, and --help should not wait

    return np.median(rgb_to_hsv(pixels[foreground] / 255.0), axis=0)


def item_attributes(catalogue) -> tuple[pd.DataFrame, bool]:
    """The items' attributes (``attr_*`` columns, one row per item) and whether they were
    measured from the pixels because the catalogue publishes none. Taste users have a taste
    over them; the oracle recommender and intra-list diversity compare items by them."""
    columns = [c for c in catalogue.items.columns if c.startswith(ATTRIBUTE_PREFIX)]
    if columns:
        return catalogue.items[columns].reset_index(drop=True), False
    return measured_attributes(catalogue.images), True


def attribute_vectors(attributes: pd.DataFrame) -> np.ndarray:
    """One-hot vectors of attribute values (one 1 per attribute), float32, one row per item."""
    return pd.get_dummies(attributes.astype(str)).to_numpy(dtype=np.float32)
