"""What real files look like: broken and unusual images, escaping paths, malformed CSVs.

Each is converted or skipped; skipped items are counted by reason and listed, the load goes
on, and only a category left empty stops it (naming the category and the reasons).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fashionbench.data import CATEGORIES, CatalogueError
from fashionbench.data.image_csv import ImageCsvSource
from fashionbench.data.images import UnusableImage, decode_image, resolve_inside
from fashionbench.data.skips import SkipLog
from fashionbench.data.text_tables import read_csv_records
from tests.conftest import compose_config
from tests.source_fixtures import CATEGORY_COLOURS, make_deepfashion, save_photo, write_hostile_image

LABELS = {"skirt": "Skirts", "dress": "Dresses", "shorts": "Shorts", "blouse": "Blouses"}


@pytest.mark.parametrize(
    ("case", "mode", "expected_rgb"),
    [
        ("grayscale", "L", (100, 100, 100)),
        ("cmyk", "CMYK", (255, 0, 0)),
        ("rgba", "RGBA", (255, 255, 255)),  # transparent pixels lie on white
        ("png16", "I;16", (128, 128, 128)),  # 32768 / 65535 of full scale, not clipped to 255
    ],
)
def test_unusual_colour_modes_become_8_bit_rgb(tmp_path, case, mode, expected_rgb):
    suffix = ".png" if case in ("rgba", "png16") else ".jpg"
    pixels, original_mode = decode_image(write_hostile_image(tmp_path / f"{case}{suffix}", case), 32)
    assert original_mode == mode
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - expected_rgb).max() <= 3


@pytest.mark.parametrize(
    ("case", "reason"),
    [("truncated", "truncated"), ("zero_byte", "empty_file"), ("text", "not_an_image"), ("big", "decompression_bomb")],
)
def test_unusable_images_raise_with_their_reason(tmp_path, case, reason):
    path = write_hostile_image(tmp_path / "image.jpg", case)
    with pytest.raises(UnusableImage) as caught:
        decode_image(path, 32, max_pixels=5000)  # the 120x100 "big" image is over it
    assert caught.value.reason == reason
    assert str(path) in caught.value.detail


def test_missing_file_and_escaping_paths(tmp_path):
    with pytest.raises(UnusableImage, match="missing_file"):
        decode_image(tmp_path / "listed-but-missing.jpg", 32)
    root = tmp_path / "root"
    assert resolve_inside(root, "images/a/../b.jpg") == root / "images" / "b.jpg"
    for escape in ("../outside.jpg", "images/../../outside.jpg", str(tmp_path / "outside.jpg"), "/etc/passwd", ""):
        with pytest.raises(UnusableImage) as caught:
            resolve_inside(root, escape)
        assert caught.value.reason == "path_escapes_root", escape


def write_labelled_csv(root: Path, rows: list[str], header: str = "image,label") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def csv_source(root: Path, **options) -> ImageCsvSource:
    settings = dict(name="hostile", root=str(root), categories=LABELS, csv_file="labels.csv", id_column="image",
                    label_column="label", path_template="{image}", image_size=32, seed=0)
    return ImageCsvSource(**{**settings, **options})


def healthy_rows(root: Path, per_category: int = 3) -> list[str]:
    rows = []
    for label, category in LABELS.items():
        for number in range(per_category):
            save_photo(root / f"ok/{label}{number}.jpg", CATEGORY_COLOURS[category], seed=number)
            rows.append(f"ok/{label}{number}.jpg,{label}")
    return rows


def test_a_catalogue_with_every_hostile_image_loads_the_rest_and_counts_each(tmp_path):
    root = tmp_path / "shop"
    rows = healthy_rows(root)
    for case in ("truncated", "zero_byte", "text", "big"):
        write_hostile_image(root / f"bad/{case}.jpg", case)
        rows.append(f"bad/{case}.jpg,dress")
    for case, suffix in (("grayscale", ".jpg"), ("cmyk", ".jpg"), ("rgba", ".png"), ("png16", ".png")):
        write_hostile_image(root / f"odd/{case}{suffix}", case)
        rows.append(f"odd/{case}{suffix},blouse")
    save_photo(tmp_path / "outside.jpg")
    rows += ["bad/missing.jpg,skirt", "../outside.jpg,skirt", f"{tmp_path / 'outside.jpg'},skirt"]
    catalogue = csv_source(write_labelled_csv(root, rows), max_pixels=5000).load()

    assert len(catalogue) == 12 + 4
    assert catalogue.skipped == {"truncated": 1, "empty_file": 1, "not_an_image": 1, "decompression_bomb": 1,
                                 "missing_file": 1, "path_escapes_root": 2}
    assert catalogue.converted == {"image_mode_L": 1, "image_mode_CMYK": 1, "image_mode_RGBA": 1, "image_mode_I_16": 1}
    listed = dict(zip(catalogue.skipped_items["item"], catalogue.skipped_items["reason"]))
    assert listed == {"bad/truncated.jpg": "truncated", "bad/zero_byte.jpg": "empty_file",
                      "bad/text.jpg": "not_an_image", "bad/big.jpg": "decompression_bomb",
                      "bad/missing.jpg": "missing_file", "../outside.jpg": "path_escapes_root",
                      str(tmp_path / "outside.jpg"): "path_escapes_root"}


def test_an_empty_category_fails_naming_it_and_the_reasons(tmp_path):
    root = tmp_path / "shop"
    rows = [row for row in healthy_rows(root) if not row.endswith("skirt")]
    write_hostile_image(root / "bad/skirt.jpg", "truncated")
    rows += ["bad/skirt.jpg,skirt", "bad/gone.jpg,skirt"]
    with pytest.raises(CatalogueError, match=r"category Skirts has no usable items \(2 listed.*"
                                             r"'truncated': 1.*'missing_file': 1"):
        csv_source(write_labelled_csv(root, rows)).load()


def test_missing_required_column_names_the_file_and_column(tmp_path):
    root = write_labelled_csv(tmp_path, ["a.jpg,skirt"], header="image,class")
    with pytest.raises(CatalogueError, match=r"labels.csv: missing required column\(s\) \['label'\]"):
        csv_source(root).load()
    with pytest.raises(CatalogueError, match=r"missing required column\(s\) \['gender'\]"):
        csv_source(root, label_column="class", filters={"gender": "Women"}).load()
    with pytest.raises(CatalogueError, match=r"data.path_template='images/\{\}.jpg'"):
        csv_source(root, path_template="images/{}.jpg").load()


def test_malformed_duplicate_and_non_utf8_rows(tmp_path):
    root = tmp_path / "shop"
    rows = healthy_rows(root)
    rows += [rows[0], rows[1], "ok/skirt0.jpg", "ok/skirt1.jpg,skirt,extra", ",dress"]
    write_labelled_csv(root, rows, header="image,label")
    with (root / "labels.csv").open("ab") as csv_file:  # a Latin-1 line (é = 0xE9) in a UTF-8 file
        save_photo(root / "ok/caf\u00e9.jpg", CATEGORY_COLOURS["Dresses"])
        csv_file.write("ok/caf\u00e9.jpg,dress\n".encode("latin-1"))
    catalogue = csv_source(root).load()
    assert len(catalogue) == 13
    assert "ok/caf\u00e9.jpg" in set(catalogue.items["item_id"])
    assert catalogue.converted == {"text_latin1": 1}
    assert catalogue.skipped == {"duplicate_row": 2, "malformed_row": 3}
    assert set(catalogue.skipped_items["item"]) >= {"labels.csv:14", "labels.csv:15", "labels.csv:16"}


def test_quoted_fields_with_commas_and_newlines_are_one_row(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,text,label\n1,"Lovely, but\nsmall",dress\n2,"She said ""wow""",skirt\n')
    skips = SkipLog()
    records = read_csv_records(path, ["id", "label"], skips)
    assert [(r["id"], r["text"], r["label"]) for r in records] == [
        ("1", "Lovely, but\nsmall", "dress"), ("2", 'She said "wow"', "skirt")]
    assert not skips.skipped


@pytest.mark.slow
def test_deepfashion_end_to_end_logs_skip_metrics_and_the_skipped_list(tmp_path, store_uri):
    from fashionbench.pipeline.experiment import run_experiment

    root = make_deepfashion(tmp_path / "deepfashion", per_split=3)
    # Break one listed image and delete another: the run must carry on and report both.
    listed = [line.split()[0] for line in (root / "Anno/list_category_img.txt").read_text().splitlines()[2:]]
    dresses = [image for image in listed if "_Dress_" in image]
    write_hostile_image(root / dresses[0], "truncated")
    (root / dresses[1]).unlink()
    cfg = compose_config([
        "data=deepfashion", f"data.root={root}", "data.image_size=32", "train.epochs=1", "train.batch_size=16",
        "users.n_users=6", "users.items_per_user=12", "eval.k=2", "model.weights=null",
        f"tracking.uri={store_uri}", "tracking.experiment_name=deepfashion-e2e",
    ])
    summary = run_experiment(cfg)

    client = MlflowClient(store_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["pipeline/data/skipped_truncated"] == 1 and metrics["pipeline/data/skipped_missing_file"] == 1
    assert metrics["pipeline/data/skipped_unmapped_label"] == 6
    assert metrics["pipeline/data/items_train"] + metrics["pipeline/data/items_val"] + metrics["pipeline/data/items_test"] == 4 * 9 - 2
    for category in CATEGORIES:
        assert f"model/test_f1/{category}" in metrics
    skipped_csv = Path(client.download_artifacts(summary.run_id, "data/skipped_items.csv", str(tmp_path)))
    text = skipped_csv.read_text()
    assert dresses[0] in text and "truncated" in text and dresses[1] in text


def test_phone_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)  # left half red, right half blue as stored
    pixels[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright, _ = decode_image(tmp_path / "phone.jpg", 32)
    assert upright[:8, :, 0].mean() > 200 and upright[-8:, :, 2].mean() > 200  # red on top, blue below
