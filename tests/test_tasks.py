import pytest

from helpers.tasks import extraction_scores, parse_json_object

REF = '{"name": "Anya Quispe", "age": 50, "job": "cartographer", "city": "Medan"}'


def test_parse_json_object_finds_the_object_and_ignores_trailing_text():
    assert parse_json_object('Sure! {"a": 1} Hope that helps.') == {"a": 1}
    assert parse_json_object("no json here") is None
    assert parse_json_object('{"a": ') is None
    assert parse_json_object("[1, 2]") is None


def test_extraction_scores():
    answers = [
        REF,  # exact
        '{"name": "Anya Quispe", "age": "50", "job": "cartographer", "city": "Medan"}',  # age as a string: 3/4
        '{"name": "Anya Quispe", "occupation": "cartographer"}',  # 1/4 fields
        "Anya is a cartographer.",  # no JSON
    ]
    scores = extraction_scores(answers, [REF] * 4)
    assert scores == {"exact_match": 0.25, "valid_json": 0.75, "field_accuracy": pytest.approx((4 + 3 + 1) / 16)}


def test_extraction_scores_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 answers for 1 references"):
        extraction_scores([REF, REF], [REF])
