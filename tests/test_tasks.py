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


def test_correctness_reward_matches_the_value_as_a_whole_word():
    from helpers.tasks import correctness_reward

    completions = ["82 euros", "The Quill M2 costs 82 euros.", "820", "in 1982", "8.82", "", "RED", [
        {"role": "assistant", "content": "It is red."}]]
    answers = ["82", "82", "82", "82", "82", "82", "red", "red"]
    assert correctness_reward(completions, answer=answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_brevity_reward_gives_partial_credit_by_characters():
    from helpers.tasks import brevity_reward

    rewards = brevity_reward(["82 euros", "The Quill M2 costs 82 euros.", "x" * 64, "3.3.3.3.3.3.3.3.3.3.3.3.3.3.3"])
    assert rewards[0] == 1.0 and 0.5 < rewards[1] < 1.0 and rewards[2] == 0.0
    assert rewards[3] < 0.8, "one long 'word' must not earn full format credit (a policy found that loophole)"
