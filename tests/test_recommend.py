"""``python -m fashionbench.recommend``: a user's or a photo's top-k from the champion, and the grid PNG."""

import numpy as np
import pytest
from PIL import Image

from fashionbench.recommend import GridRow, draw_grid, grid_size_px, main
from fashionbench.tracking.registry import load_recommender
from tests.tracked_store import MODEL_NAME

pytestmark = pytest.mark.slow


def test_the_grid_has_the_promised_size(tmp_path):
    cell = np.zeros((32, 32, 3), dtype=np.uint8)
    rows = [GridRow("favourites", [(cell, "a")] * 3), GridRow("recommended", [(cell, "b\nd=0.1")] * 5)]
    path = draw_grid(rows, tmp_path / "grid.png", "title")
    assert Image.open(path).size == grid_size_px(2, 5)


@pytest.fixture(scope="module")
def recommender(tracked_store, champion):
    return load_recommender(tracked_store.settings, f"models:/{MODEL_NAME}@champion")


def cli(tracked_store, *args):
    return main(["--tracking-uri", tracked_store.uri, "--model-name", MODEL_NAME, *args])


def test_a_users_recommendations_are_printed_and_drawn(tracked_store, recommender, tmp_path, capsys):
    user = max(recommender.user_ids, key=lambda u: len(recommender.favourites(u)))
    favourites = recommender.favourites(user)
    out = tmp_path / "user.png"
    assert cli(tracked_store, "--user", user, "--k", "2", "--out", str(out)) == 0

    printed = capsys.readouterr().out
    expected = recommender.recommend_for_items(favourites, 2).table
    for row in expected.itertuples():
        assert row.item_id in printed
        assert not set(favourites) & set(expected["item_id"])  # favourites are never recommended
    # Per category with favourites: a row of favourites (at most 8) and a row of 2 recommendations.
    per_category = {}
    for item in favourites:
        per_category.setdefault(recommender.category_of(item), []).append(item)
    columns = max(2, *(min(8, len(items)) for items in per_category.values()))
    assert Image.open(out).size == grid_size_px(2 * len(per_category), columns)


def test_a_photo_of_a_shop_item_finds_that_item_first(tracked_store, recommender, tmp_path, capsys):
    item = recommender.shop.items["item_id"].iat[0]
    category = recommender.category_of(item)
    photo = tmp_path / "photo.png"
    Image.fromarray(recommender.image_of(item)).save(photo)
    out = tmp_path / "photo_grid.png"
    assert cli(tracked_store, "--images", str(photo), "--category", category, "--k", "3", "--out", str(out)) == 0

    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("photo.png")]
    assert lines[0][1:4] == [category, "1", item]
    assert float(lines[0][4]) < 1e-3
    assert Image.open(out).size == grid_size_px(1, 4)  # the photo and its 3 recommendations


def test_unknown_users_files_and_versions_are_named(tracked_store, champion, tmp_path, capsys):
    assert cli(tracked_store, "--user", "user-9999", "--out", str(tmp_path / "x.png")) == 1
    assert "unknown user 'user-9999'" in capsys.readouterr().err
    assert cli(tracked_store, "--images", str(tmp_path / "missing.jpg")) == 1
    assert f"no file {tmp_path / 'missing.jpg'}" in capsys.readouterr().err
    assert cli(tracked_store, "--user", "user-0000", "--version", "99") == 1
    assert f"--version '99': {MODEL_NAME!r} has no such version; its versions are 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as empty:  # before any model is loaded
        cli(tracked_store, "--user", "")
    assert empty.value.code == 2 and "--user needs a user id" in capsys.readouterr().err


def test_a_run_that_was_never_registered_recommends_the_same(tracked_store, recommender, tmp_path, capsys):
    user = recommender.user_ids[0]
    assert cli(tracked_store, "--user", user, "--out", str(tmp_path / "a.png")) == 0
    from_registry = capsys.readouterr().out.splitlines()[:-1]  # the last line names the PNG
    assert cli(tracked_store, "--run", tracked_store.real_run_id, "--experiment", tracked_store.experiment,
               "--user", user, "--out", str(tmp_path / "b.png")) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == from_registry


def test_query_photos_are_decoded_as_the_catalogues_photos_were(tmp_path):
    from PIL import Image

    from fashionbench.data.images import decode_image
    from fashionbench.recommend import load_image_files

    # A wide, CMYK photo: squashed (not cropped) and converted exactly like a shop photo.
    pixels = np.random.default_rng(0).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    path = tmp_path / "wide.jpg"
    Image.fromarray(pixels).convert("CMYK").save(path)
    np.testing.assert_array_equal(load_image_files([path], 32)[0], decode_image(path, 32)[0])
