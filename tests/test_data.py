import json

import pytest
from datasets import Dataset

import helpers
from helpers.data import ASSETS, COURSE_DATASETS, check_format, load_course_dataset, wording_overlap


@pytest.mark.parametrize("name", list(COURSE_DATASETS))
def test_course_dataset_loads_with_a_held_out_split_and_a_datasheet(name):
    dataset = load_course_dataset(name)
    assert set(dataset) == set(COURSE_DATASETS[name])
    if "train" in dataset:
        assert len(dataset["train"]) >= 300 and len(dataset["test"]) >= 50
    else:  # general text: only measured on (forgetting, notebook 03), never trained on
        assert len(dataset["test"]) >= 30
    sheet = (ASSETS / name / "DATASHEET.md").read_text()
    for heading in ("Provenance", "Licence", "Columns", "Held-out split"):
        assert heading in sheet


@pytest.mark.parametrize("name", ["pretrain", "sft", "preferences", "rl"])
def test_no_test_row_is_in_train(name):
    dataset = load_course_dataset(name)
    train = {json.dumps(row, sort_keys=True) for row in dataset["train"]}
    leaked = [row for row in dataset["test"] if json.dumps(row, sort_keys=True) in train]
    assert leaked == []


def test_sft_test_people_are_unseen_in_train():
    dataset = load_course_dataset("sft")
    names = lambda split: {json.loads(r[0]["content"])["name"] for r in dataset[split]["completion"]}  # noqa: E731
    cities = lambda split: {json.loads(r[0]["content"])["city"] for r in dataset[split]["completion"]}  # noqa: E731
    assert names("test").isdisjoint(names("train"))
    assert cities("test").isdisjoint(cities("train"))


@pytest.mark.parametrize("split", ["dev", "test"])
def test_retrieval_held_out_queries_point_at_passages_no_training_pair_uses(split):
    dataset = load_course_dataset("retrieval")
    corpus = {row["id"]: row["text"] for row in dataset["corpus"]}
    trained_passages = set(dataset["train"]["positive"])
    for row in dataset[split]:
        assert row["positive_id"] in corpus
        assert corpus[row["positive_id"]] not in trained_passages


def retrieval_devices(dataset):
    return sorted({text.split(":")[0] for text in dataset["corpus"]["text"]})


@pytest.mark.parametrize("split", ["dev", "test"])
def test_retrieval_held_out_wording_never_occurs_in_training(split):
    """Issue 19: with the device name masked, every held-out question used to be a training question word for word.
    Now no held-out question is, and under 10% of its word trigrams occur in any training question."""
    dataset = load_course_dataset("retrieval")
    overlap = wording_overlap(dataset[split]["query"], dataset["train"]["anchor"], names=retrieval_devices(dataset))
    assert overlap["exact"] == 0, overlap
    assert overlap["ngrams"] < 0.10, overlap


def test_retrieval_passages_differ_even_without_the_device_name():
    """A held-out passage must not be a trained positive with another device's name in it."""
    dataset = load_course_dataset("retrieval")
    corpus = {row["id"]: row["text"] for row in dataset["corpus"]}
    held = [corpus[pid] for split in ("dev", "test") for pid in set(dataset[split]["positive_id"])]
    assert wording_overlap(held, dataset["train"]["positive"], names=retrieval_devices(dataset))["exact"] == 0
    assert len({pid for pid in dataset["dev"]["positive_id"]} & {pid for pid in dataset["test"]["positive_id"]}) == 0


def test_wording_overlap_sees_a_copy_behind_another_name():
    train = ["my Lumo lamp keeps blinking orange", "Orbix router is dead"]
    copied = wording_overlap(["my Orbix router keeps blinking orange"], train, names=["Lumo lamp", "Orbix router"])
    assert copied == {"exact": 1.0, "ngrams": 1.0, "n": 3}
    fresh = wording_overlap(["the Lumo lamp indicator pulses gold"], train, names=["Lumo lamp", "Orbix router"])
    assert fresh["exact"] == 0 and fresh["ngrams"] == 0
    assert wording_overlap(["my Orbix router keeps blinking orange"], train)["exact"] == 0  # no names: not masked


def test_preference_pairs_differ_only_in_the_form_the_user_asked_for():
    dataset = load_course_dataset("preferences")
    wants_value = 0
    for row in dataset["train"]:
        request = row["prompt"][-1]["content"]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        short, long = sorted([chosen, rejected], key=len)
        assert short.split()[0] in long and short.split()[0] in request, "both answers carry the stated fact"
        asks_value = "value" in request
        assert (chosen == short) == asks_value, f"chosen must take the form the user asked for: {row}"
        wants_value += asks_value
    assert 0.4 < wants_value / len(dataset["train"]) < 0.6, "both requests, about equally often"


def test_assets_stay_small():
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert total < 5 * 2**20, f"assets/ is {total / 2**20:.1f} MB; keep the shipped data under a few MB"


def test_generator_is_deterministic(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_datasets", ASSETS.parent / "scripts" / "make_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(out=tmp_path)
    for shipped in ASSETS.rglob("*.jsonl"):
        regenerated = tmp_path / shipped.relative_to(ASSETS)
        assert regenerated.read_bytes() == shipped.read_bytes(), f"{shipped.name} differs from what the script writes"


def test_missing_column_names_it_and_the_expected_format():
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}], "answer": [{"role": "assistant",
                                                                                          "content": "a"}]}])
    with pytest.raises(ValueError) as error:
        check_format(data, "preference", where="my_data")
    message = str(error.value)
    assert "my_data: missing column(s) ['chosen', 'rejected']" in message
    assert "Found columns: ['prompt', 'answer']" in message
    assert 'Expected one row like {"prompt": [{"role": "user", "content": "..."}], "chosen"' in message
    assert "rename_column" in message


def test_plain_string_prompts_get_a_conversion_hint():
    data = Dataset.from_list([{"prompt": "hi", "completion": "hello"}])
    with pytest.raises(ValueError) as error:
        check_format(data, "prompt_completion")
    message = str(error.value)
    assert "column 'prompt' holds plain strings" in message
    assert "dataset.map(" in message and "'role': 'user'" in message


def test_malformed_messages_are_refused():
    data = Dataset.from_list([{"prompt": [{"speaker": "user", "text": "hi"}], "completion": [{"role": "a",
                                                                                              "content": "b"}]}])
    with pytest.raises(ValueError, match=r"column 'prompt' must be a list of \{'role', 'content'\} dicts"):
        check_format(data, "prompt_completion")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown course dataset 'dpo'. Available: pretrain, sft"):
        load_course_dataset("dpo")
    with pytest.raises(ValueError, match="Unknown format"):
        check_format(Dataset.from_list([{"a": 1}]), "chat")


def test_general_text_is_general():
    """Notebook 03 measures forgetting on these paragraphs: they must be distinct, of similar length, and share no
    content with the task the models are fine-tuned on (no records, no JSON, none of the sft data's people)."""
    general = load_course_dataset("general")["test"]["text"]
    assert len(set(general)) == len(general) >= 30
    assert all(40 <= len(text.split()) <= 60 for text in general), [len(t.split()) for t in general]
    sft = load_course_dataset("sft")
    names = {json.loads(r[0]["content"])["name"] for split in sft for r in sft[split]["completion"]}
    for text in general:
        assert "{" not in text and "JSON" not in text
        assert not any(name in text for name in names), text


def test_unpair_gives_each_pair_a_desirable_and_an_undesirable_answer_in_ktos_format():
    pairs = load_course_dataset("preferences")["train"].select(range(3))
    rows = helpers.unpair(pairs)
    check_format(rows, "unpaired")
    assert len(rows) == 6 and rows["label"] == [True] * 3 + [False] * 3
    assert rows[0]["completion"] == pairs[0]["chosen"] and rows[3]["completion"] == pairs[0]["rejected"]
    assert rows[0]["prompt"] == rows[3]["prompt"] == pairs[0]["prompt"]
    # TRL pairs each row's prompt with the previous row's answer for KTO's reference point: never its own pair's
    assert all(rows[i]["prompt"] != rows[i - 1]["prompt"] for i in range(len(rows)))


def test_a_label_that_is_not_a_bool_gets_a_conversion_hint():
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}],
                               "completion": [{"role": "assistant", "content": "hello"}], "label": "good"}])
    with pytest.raises(ValueError) as error:
        check_format(data, "unpaired")
    assert "column 'label' must hold True (a desirable answer) or False" in str(error.value)
    assert "dataset.map(" in str(error.value)
