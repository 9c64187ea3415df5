"""The reviews CSV: the real sample, and the malformed files real CSVs turn out to be."""

import pytest

from fashionbench.users.reviews import ReviewsError, load_reviews
from tests.conftest import SHARED_DATA

HEADER = ",Clothing ID,Age,Title,Review Text,Rating,Recommended IND,Positive Feedback Count,Division Name,Department Name,Class Name\n"
SAMPLE = SHARED_DATA / "reviews" / "womens_clothing_reviews_first1000.csv"


def write(tmp_path, body: bytes, header: str = HEADER):
    path = tmp_path / "reviews.csv"
    path.write_bytes(header.encode() + body)
    return path


@pytest.mark.skipif(not SAMPLE.is_file(), reason=f"the shared reviews sample is not at {SAMPLE}")
def test_the_real_sample_loads_with_its_published_counts():
    reviews = load_reviews(SAMPLE)
    # ../shared/README.md: Dresses 198, Blouses 186, Skirts 52 (and 3 Shorts rows, which it rounds to 0).
    assert reviews.class_counts() == {"Skirts": 52, "Dresses": 198, "Shorts": 3, "Blouses": 186}
    assert reviews.skipped == {"unmapped_class": 1000 - 439}
    assert len(reviews.rows) + sum(reviews.skipped.values()) == 1000


def test_quoted_newlines_commas_and_quotes_stay_inside_their_field(tmp_path):
    body = (b'0,1,30,,"Love it, really.\nSecond line ""quoted""",5,1,0,General,Tops,Blouses\n'
            b'1,2,40,Title,plain,4,1,0,General,Dresses,Dresses\n')
    reviews = load_reviews(write(tmp_path, body))
    assert reviews.rows[["clothing_id", "rating", "category"]].values.tolist() == [["1", 5, "Blouses"], ["2", 4, "Dresses"]]


def test_bad_rows_are_counted_by_reason_and_skipped(tmp_path):
    body = (b"0,1,30,,ok,5,1,0,General,Tops,Blouses\n"
            b"0,1,30,,ok,5,1,0,General,Tops,Blouses\n"      # exact duplicate
            b"1,2,30,,ok,five,1,0,General,Tops,Blouses\n"   # non-numeric rating
            b"2,3,30,,ok,9,1,0,General,Tops,Blouses\n"      # out of range
            b"3,4,30,,ok,4,1,0,,,\n"                        # empty Class Name
            b"4,5,30,,ok,4,1,0,General,Tops,Knits\n"        # another class
            b"5,,30,,ok,4,1,0,General,Tops,Skirts\n")       # no Clothing ID
    reviews = load_reviews(write(tmp_path, body))
    assert len(reviews.rows) == 1
    assert reviews.skipped == {"duplicate": 1, "invalid_rating": 2, "empty_class": 1,
                               "unmapped_class": 1, "missing_clothing_id": 1}


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    body = b"0,1,30,,caf\xe9 \xff,5,1,0,General,Tops,Blouses\n1,2,30,,fine,3,1,0,General,Dresses,Dresses\n"
    reviews = load_reviews(write(tmp_path, body))
    assert len(reviews.rows) == 2
    assert reviews.skipped["rows_with_invalid_utf8"] == 1


def test_a_missing_column_is_named(tmp_path):
    path = write(tmp_path, b"0,1,30,,ok,5,1,0,General,Tops\n", header=HEADER.replace(",Class Name", ""))
    with pytest.raises(ReviewsError, match=r"lacks the column\(s\) \['Class Name'\]") as error:
        load_reviews(path)
    assert str(path) in str(error.value)


def test_a_missing_file_says_which_option_to_set(tmp_path):
    with pytest.raises(ReviewsError, match="users.reviews"):
        load_reviews(tmp_path / "nope.csv")


def test_class_map_adds_classes_and_rejects_unknown_categories(tmp_path):
    path = write(tmp_path, b"0,1,30,,ok,5,1,0,General,Tops,Knits\n")
    assert load_reviews(path, {"Knits": "Blouses"}).class_counts()["Blouses"] == 1
    with pytest.raises(ReviewsError, match="unknown categories \\['Hats'\\]"):
        load_reviews(path, {"Knits": "Hats"})
