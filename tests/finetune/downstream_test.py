"""The downstream tasks (lmx.finetune.catalog, sources, local_files, downstream): T5's text-to-text formats and their
round trip, the classification layouts token by token on hand-written examples, TFDS glue/* loading through
tfds.testing.mock_data (the real tfds code path), the local copies in ../shared/data (row counts of the GLUE dev sets,
label sets, AG News's stable split) and the one-line errors for bad input."""

import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from lmx.config_lib import ConfigError
from lmx.data import sources as data_sources
from lmx.data.wordpiece import WordPieceVocabulary
from lmx.finetune import catalog, downstream, local_files, metrics

data_sources.hide_accelerators_from_tf()

# A hand-written WordPiece vocabulary: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then the words below.
WORDS = ["the", "cat", "sat", "a", "dog", "ran", "on", "mat"]
THE, CAT, SAT, A, DOG, RAN, ON, MAT = range(5, 13)
PAD, CLS, SEP = 0, 2, 3


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory) -> WordPieceVocabulary:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return WordPieceVocabulary(str(path), lower_case=True)


def _write(root, relative: str, text: str) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """A data_dir with tiny copies of SST-2, RTE and Multi30k in the real files' formats."""
    root = str(tmp_path_factory.mktemp("data"))
    _write(root, "glue/sst2/train.tsv", "sentence\tlabel\nthe cat \t1\n")
    _write(root, "glue/sst2/dev.tsv", "sentence\tlabel\na dog \t0\n")
    _write(root, "glue/sst2/test.tsv", "sentence\tlabel\nthe cat sat on the mat \t0\nthe dog ran \t1\n")
    header = "index\tsentence1\tsentence2\tlabel\n"
    _write(root, "glue/rte/train.tsv", header + "0\tthe cat\ta dog\tentailment\n")
    _write(root, "glue/rte/val.tsv", "1\ta cat\tthe dog\tnot_entailment\n")  # no header, as the real val.tsv
    rows = "0\tthe cat sat\ta dog ran\tentailment\n1\tthe cat sat on the mat\ta dog\tnot_entailment\n"
    _write(root, "glue/rte/dev.tsv", header + rows)
    for split in ("train", "val"):
        _write(root, f"translation/multi30k/{split}.en", "The house is wonderful.\nA dog runs.\n")
        _write(root, f"translation/multi30k/{split}.de", "Das Haus ist wunderbar.\nEin Hund rennt.\n")
    return root


def _rows(dataset: tf.data.Dataset) -> list[dict]:
    return list(dataset.as_numpy_iterator())


# --- the catalog: text-to-text formats and their round trip -------------------------------------------------------


def test_every_label_text_round_trips():
    for task in catalog.DOWNSTREAM_TASKS.values():
        for label in range(task.num_classes):
            assert task.text_to_label(task.label_to_text(label)) == label, task.name
        if task.num_classes:
            assert task.text_to_label("no such class") == -1 and task.text_to_label("") == -1
            with pytest.raises(ValueError, match="not a class id"):
                task.label_to_text(task.num_classes)
    stsb = catalog.get_task("stsb")
    for k in range(26):  # STS-B targets: 0.0, 0.2, ..., 5.0
        assert stsb.text_to_label(stsb.label_to_text(k / 5)) == k / 5
    # T5 rounds the score to the nearest 0.2 (half to even) and writes one decimal.
    assert [stsb.label_to_text(x) for x in (3.75, 3.7, 0.1, 4.99, 0)] == ["3.8", "3.6", "0.0", "5.0", "0.0"]
    assert stsb.text_to_label(" 2.4 ") == 2.4 and stsb.text_to_label("two") == -1 and stsb.text_to_label("nan") == -1
    multi30k = catalog.get_task("multi30k")
    assert multi30k.num_classes == 0 and stsb.num_classes == 0
    with pytest.raises(ValueError, match="translation"):
        multi30k.label_to_text(0)


def test_label_orders_follow_tfds(tmp_path):
    for name, task in catalog.DOWNSTREAM_TASKS.items():
        if task.tfds_name and task.kind == "classification":  # the builder's code defines its features
            names = tfds.builder(task.tfds_name, data_dir=str(tmp_path)).info.features["label"].names
            assert tuple(names) == task.label_names, name


# Each task's T5 input and target for sentence1 "A.", sentence2 "B." and the label given (T5 paper, appendix D).
T5_FORMATS = {
    "sst2": (1, "sst2 sentence: A.", "positive"),
    "cola": (0, "cola sentence: A.", "unacceptable"),
    "rte": (1, "rte sentence1: A. sentence2: B.", "not_entailment"),
    "mrpc": (1, "mrpc sentence1: A. sentence2: B.", "equivalent"),
    "qqp": (0, "qqp question1: A. question2: B.", "not_duplicate"),
    "stsb": (3.75, "stsb sentence1: A. sentence2: B.", "3.8"),
    "mnli": (1, "mnli hypothesis: B. premise: A.", "neutral"),
    "qnli": (0, "qnli question: A. sentence: B.", "entailment"),
    "wnli": (1, "wnli sentence1: A. sentence2: B.", "entailment"),
    "agnews": (3, "agnews: A. B.", "Sci/Tech"),
    "multi30k": (-1, "translate English to German: A.", "B."),
}


def test_text_to_text_formats_of_every_task():
    assert set(T5_FORMATS) == set(catalog.DOWNSTREAM_TASKS)
    for name, (label, inputs, targets) in T5_FORMATS.items():
        task = catalog.get_task(name)
        example = {
            "sentence1": ["A."],
            "sentence2": ["B."],
            "label": np.array([label], downstream.label_dtype(task).as_numpy_dtype),
        }
        (row,) = _rows(downstream.text_to_text(tf.data.Dataset.from_tensor_slices(example), task=task))
        assert (row["inputs"].decode(), row["targets"].decode()) == (inputs, targets), name
        assert task.input_text("A.", "B.") == inputs


def test_stsb_targets_of_the_pipeline_match_label_to_text():
    stsb = catalog.get_task("stsb")
    scores = np.arange(501, dtype=np.float32) / 100  # 0.00 .. 5.00, all the half-way cases included
    example = {"sentence1": [""] * 501, "sentence2": [""] * 501, "label": scores}
    rows = _rows(downstream.text_to_text(tf.data.Dataset.from_tensor_slices(example).batch(501), task=stsb))
    assert [t.decode() for t in rows[0]["targets"]] == [stsb.label_to_text(s) for s in scores]


def test_unknown_names_are_one_clear_line(tiny_dir, wordpiece):
    with pytest.raises(ConfigError, match=r"config.finetune.task='sst3' is unknown; choose one of \['agnews'"):
        catalog.get_task("sst3")
    sst2 = catalog.get_task("sst2")
    with pytest.raises(ConfigError, match="config.finetune.source='hub' is unknown"):
        downstream.examples(sst2, "train", source="hub", data_dir=tiny_dir)
    with pytest.raises(ConfigError, match="multi30k.*no TFDS dataset.*source='local'"):
        downstream.examples(catalog.get_task("multi30k"), "train", source="tfds", data_dir="")
    with pytest.raises(ConfigError, match="'mrpc' has no local files.*source='tfds'"):
        downstream.examples(catalog.get_task("mrpc"), "train", source="local", data_dir=tiny_dir)
    with pytest.raises(ConfigError, match="translation task: it has no classify format"):
        downstream.register_seqio_task(
            catalog.get_task("multi30k"), wordpiece, format="classify", source="local", data_dir=tiny_dir
        )
    with pytest.raises(ValueError, match="split 'test' is unknown"):
        downstream.examples(sst2, "test", source="local", data_dir=tiny_dir)


# --- classification layouts, token by token ------------------------------------------------------------------------


def test_bert_layout_of_a_pair(tiny_dir, wordpiece):
    rte = catalog.get_task("rte")
    rows = _rows(
        downstream.classification_features(rte, wordpiece, "validation", source="local", data_dir=tiny_dir, length=10)
    )
    assert rows[0]["encoder_input_tokens"].tolist() == [CLS, THE, CAT, SAT, SEP, A, DOG, RAN, SEP, PAD]
    assert rows[0]["encoder_token_types"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    # 6 + 2 tokens in a budget of 10 - 3: the longer sentence loses its last token.
    assert rows[1]["encoder_input_tokens"].tolist() == [CLS, THE, CAT, SAT, ON, THE, SEP, A, DOG, SEP]
    assert rows[1]["encoder_token_types"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert (
        [row["labels"] for row in rows]
        == [0, 1]
        == downstream.eval_targets(rte, "validation", source="local", data_dir=tiny_dir)
    )
    assert rows[0]["labels"].dtype == np.int32 and rows[0]["labels"].shape == ()
    # Equal lengths over the budget: BERT cuts the second sentence first.
    (row, _) = _rows(
        downstream.classification_features(rte, wordpiece, "validation", source="local", data_dir=tiny_dir, length=8)
    )
    assert row["encoder_input_tokens"].tolist() == [CLS, THE, CAT, SAT, SEP, A, DOG, SEP]


def test_bert_layout_of_one_sentence(tiny_dir, wordpiece):
    sst2 = catalog.get_task("sst2")
    rows = _rows(
        downstream.classification_features(sst2, wordpiece, "validation", source="local", data_dir=tiny_dir, length=6)
    )
    assert rows[0]["encoder_input_tokens"].tolist() == [CLS, THE, CAT, SAT, ON, SEP]  # truncated to 6
    assert rows[1]["encoder_input_tokens"].tolist() == [CLS, THE, DOG, RAN, SEP, PAD]
    assert all(row["encoder_token_types"].tolist() == [0] * 6 for row in rows)
    assert [int(row["labels"]) for row in rows] == [0, 1]


def test_t5_layout_appends_eos(tiny_dir, wordpiece):
    rte = catalog.get_task("rte")
    rows = _rows(
        downstream.classification_features(
            rte, wordpiece, "validation", source="local", data_dir=tiny_dir, length=10, layout="t5"
        )
    )
    eos = SEP  # WordPiece's eos is [SEP]
    assert rows[0]["encoder_input_tokens"].tolist() == [THE, CAT, SAT, A, DOG, RAN, eos, PAD, PAD, PAD]
    assert rows[0]["encoder_token_types"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert rows[1]["encoder_input_tokens"].tolist() == [THE, CAT, SAT, ON, THE, MAT, A, DOG, eos, PAD]
    with pytest.raises(ConfigError, match="layout 'gpt' is unknown"):
        downstream.resolve_layout(wordpiece, "gpt")
    assert downstream.resolve_layout(wordpiece, "auto") == "bert"
    assert [downstream.layout_of_model(m) for m in ("encoder_decoder", "encoder_only", "electra")] == [
        "t5",
        "bert",
        "bert",
    ]


def test_t5_vocabulary_layouts_and_text_to_text(tiny_dir, shared_data):
    t5 = seqio.SentencePieceVocabulary(str(shared_data / "spm" / "t5_spiece.model"), extra_ids=100)
    assert downstream.resolve_layout(t5, "auto") == "t5"  # T5's vocabulary has no cls piece
    rte = catalog.get_task("rte")
    (row, _) = _rows(
        downstream.classification_features(rte, t5, "validation", source="local", data_dir=tiny_dir, length=16)
    )
    a, b = t5.encode("the cat sat"), t5.encode("a dog ran")
    assert row["encoder_input_tokens"].tolist() == a + b + [1] + [0] * (15 - len(a + b))
    assert row["encoder_token_types"].tolist() == [0] * len(a) + [1] * (len(b) + 1) + [0] * (15 - len(a + b))

    multi30k = catalog.get_task("multi30k")
    where = {"source": "local", "data_dir": tiny_dir}
    (row, _) = _rows(
        downstream.text_to_text_features(
            multi30k, t5, "validation", **where, inputs_length=14, targets_length=10, decoder_only=False
        )
    )
    # The README of ../shared/data gives T5's ids of this very input.
    english = [13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5]
    assert row["encoder_input_tokens"].tolist() == english + [1, 0, 0, 0]
    german = t5.encode("Das Haus ist wunderbar.") + [1]
    padding = [0] * (10 - len(german))
    assert row["decoder_target_tokens"].tolist() == german + padding
    assert row["decoder_input_tokens"].tolist() == ([0] + german + padding)[:10]  # shifted right
    assert row["decoder_loss_weights"].tolist() == [1] * len(german) + padding

    (row, _) = _rows(
        downstream.text_to_text_features(
            multi30k, t5, "validation", **where, inputs_length=14, targets_length=10, decoder_only=True
        )
    )
    sequence = english + [1] + german  # prefix EOS target EOS, in one row of 24
    padding = [0] * (24 - len(sequence))
    assert row["decoder_target_tokens"].tolist() == sequence + padding
    assert row["decoder_input_tokens"].tolist() == ([0] + sequence + padding)[:24]
    assert row["decoder_loss_weights"].tolist() == [0] * 11 + [1] * len(german) + padding
    assert row["decoder_causal_attention"].tolist() == [1] * 12 + [0] * 12  # the prefix and the position after it
    assert downstream.eval_targets(multi30k, "validation", **where) == ["Das Haus ist wunderbar.", "Ein Hund rennt."]


def test_text_to_text_task_scores_through_seqio_postprocess_and_metric_fns(tiny_dir, wordpiece):
    rte = catalog.get_task("rte")
    name = downstream.register_seqio_task(rte, wordpiece, format="text_to_text", source="local", data_dir=tiny_dir)
    assert name == "finetune_rte_text_to_text"
    task = seqio.get_mixture_or_task(name)
    rows = _rows(task.get_dataset({"inputs": 32, "targets": 4}, split="validation", shuffle=False))
    assert rows[0]["inputs_pretokenized"] == b"rte sentence1: the cat sat sentence2: a dog ran"
    targets = [task.postprocess_fn(row["targets_pretokenized"], example=row, is_target=True) for row in rows]
    predictions = [task.postprocess_fn(text) for text in (b"entailment", b"entailment")]
    assert targets == [0, 1] and predictions == [0, 0]
    assert task.metric_fns[0](targets, predictions) == {"accuracy": 0.5}


# --- TFDS glue/* through tfds.testing.mock_data --------------------------------------------------------------------


@pytest.fixture
def mocked_tfds(monkeypatch):
    """TFDS with generated data (tfds.testing.mock_data); records the TFDS split each read asks for."""
    splits = []
    map_split = seqio.utils.LazyTfdsLoader._map_split

    def recording(self, split):
        splits.append(mapped := map_split(self, split))
        return mapped

    monkeypatch.setattr(seqio.utils.LazyTfdsLoader, "_map_split", recording)
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield splits


@pytest.mark.parametrize(
    "name, fields, split",
    [
        ("sst2", ("sentence", None), "validation"),
        ("mnli", ("premise", "hypothesis"), "validation_matched"),
        ("stsb", ("sentence1", "sentence2"), "validation"),
        ("agnews", ("title", "description"), "test"),
    ],
)
def test_tfds_examples_in_the_common_schema(mocked_tfds, name, fields, split):
    task = catalog.get_task(name)
    rows = _rows(downstream.examples(task, "validation", source="tfds", data_dir=""))
    assert mocked_tfds == [split]
    raw = _rows(tfds.load(task.tfds_name, split=split))  # the mock's data: the same rows
    assert len(rows) == len(raw) == 6
    for row, original in zip(rows, raw, strict=True):
        assert row["sentence1"] == original[fields[0]]
        assert row["sentence2"] == (original[fields[1]] if fields[1] else b"")
        assert row["label"] == original["label"].astype(row["label"].dtype)
    assert rows[0]["label"].dtype == (np.float32 if name == "stsb" else np.int32)


def test_tfds_features_of_both_formats(mocked_tfds, wordpiece):
    mnli, stsb = catalog.get_task("mnli"), catalog.get_task("stsb")
    where = {"source": "tfds", "data_dir": ""}
    raw = _rows(downstream.examples(mnli, "validation", **where))
    rows = _rows(downstream.classification_features(mnli, wordpiece, "validation", **where, length=24))
    for row, example in zip(rows, raw, strict=True):
        tokens, types = row["encoder_input_tokens"], row["encoder_token_types"]
        n_a = len(wordpiece.encode(example["sentence1"].decode()))
        n_b = len(wordpiece.encode(example["sentence2"].decode()))
        assert n_a + n_b + 3 <= 24  # the mock's texts are short: nothing truncated
        assert tokens[0] == CLS and tokens[n_a + 1] == SEP and tokens[n_a + n_b + 2] == SEP
        assert types.tolist() == [0] * (n_a + 2) + [1] * (n_b + 1) + [0] * (21 - n_a - n_b)
        assert row["labels"] == example["label"]
    rows = _rows(downstream.classification_features(stsb, wordpiece, "validation", **where, length=24))
    assert rows[0]["labels"].dtype == np.float32
    scores = downstream.eval_targets(stsb, "validation", **where)
    assert [float(row["labels"]) for row in rows] == scores
    name = downstream.register_seqio_task(stsb, wordpiece, format="text_to_text", **where)
    texts = _rows(
        seqio.get_mixture_or_task(name).get_dataset({"inputs": 64, "targets": 4}, "validation", shuffle=False)
    )
    assert [row["targets_pretokenized"].decode() for row in texts] == [stsb.label_to_text(s) for s in scores]


def test_tfds_not_prepared_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="glue/rte:2.0.0 is not prepared in .*config.finetune.data_dir") as e:
        downstream.examples(catalog.get_task("rte"), "train", source="tfds", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)


# --- the local copies ----------------------------------------------------------------------------------------------

# task -> (training rows, validation rows: the GLUE dev set), from ../shared/data/README.md.
LOCAL_COUNTS = {
    "sst2": (60_614 + 6_735, 872),
    "cola": (7_250 + 1_301, 1_043),
    "rte": (2_127 + 363, 277),
    "agnews": (6_600, 1_000),
    "multi30k": (29_000, 1_014),
}


@pytest.mark.parametrize("name", sorted(LOCAL_COUNTS))
def test_local_copies_have_the_documented_rows_and_labels(name, shared_data):
    task = catalog.get_task(name)
    for split, count in zip(("train", "validation"), LOCAL_COUNTS[name], strict=True):
        targets = downstream.eval_targets(task, split, source="local", data_dir=str(shared_data))
        assert len(targets) == count, (name, split)
        if task.kind == "classification":
            counts = np.bincount(targets, minlength=task.num_classes)
            assert len(counts) == task.num_classes and counts.min() > 0.2 * count / task.num_classes
        else:
            assert all(isinstance(t, str) and t for t in targets)
    (first,) = _rows(downstream.examples(task, "validation", source="local", data_dir=str(shared_data)).take(1))
    expected_first = {
        "sst2": b"it 's a charming and often affecting journey .",
        "cola": b"The sailors rode the breeze clear of the rocks.",
        "rte": b"Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according "
        b"to the Christopher Reeve Foundation.",
        "multi30k": b"A group of men are loading cotton onto a truck",
    }
    if name in expected_first:
        assert first["sentence1"] == expected_first[name]
    assert (first["sentence2"] == b"") == (name in ("sst2", "cola"))


def test_agnews_split_is_stable_and_disjoint(shared_data, tmp_path):
    agnews = catalog.get_task("agnews")

    def pairs(data_dir, split):
        rows = _rows(downstream.examples(agnews, split, source="local", data_dir=str(data_dir)).batch(8000))[0]
        return list(zip(rows["sentence1"], rows["sentence2"], strict=True))

    validation, train = pairs(shared_data, "validation"), pairs(shared_data, "train")
    assert not set(validation) & set(train) and len(set(validation) | set(train)) == 7600
    assert not any(b"\\" in a + b for a, b in validation)  # "\" line-break marks became spaces
    # The split depends on the rows, not on their order in the file.
    with open(shared_data / "agnews" / "test.csv", encoding="utf-8") as f:
        lines = f.readlines()
    _write(str(tmp_path), "agnews/test.csv", "".join(reversed(lines)))
    assert sorted(pairs(tmp_path, "validation")) == sorted(validation)


def test_shuffled_epochs_and_shards_cover_the_split(wordpiece, shared_data, tmp_path):
    sst2 = catalog.get_task("sst2")
    where = {"source": "local", "data_dir": str(shared_data)}
    source = downstream.data_source(sst2, **where)

    def sentences(**kwargs):
        return list(_rows(source.get_dataset("validation", **kwargs).map(lambda row: row["sentence1"]).batch(1000))[0])

    texts, shuffled = sentences(shuffle=False), sentences(shuffle=True, seed=3)
    assert sorted(shuffled) == sorted(texts) and shuffled != texts  # a permutation of the whole split
    assert sentences(shuffle=True, seed=3) == shuffled  # seeded: the same order again

    labels = downstream.eval_targets(sst2, "validation", **where)

    def features(**kwargs):
        return downstream.classification_features(sst2, wordpiece, "validation", **where, length=8, **kwargs)

    def read(**kwargs):
        blocks = _rows(features(**kwargs).map(lambda row: row["labels"]).batch(1000))
        return [int(label) for block in blocks for label in block]

    two_epochs = read(shuffle=True, seed=3, num_epochs=2)
    assert sorted(two_epochs) == sorted(labels * 2) and two_epochs[:872] != two_epochs[872:]  # new order each epoch
    assert read(shard_info=seqio.ShardInfo(index=1, num_shards=2)) == labels[1::2]  # every other example

    # A training stream resumes exactly from a tf.data checkpoint (lmx.data.pipeline's), which stays small: the
    # shuffle keeps a seed and a position, not a buffer of rows.
    def stream():
        return iter(features(shuffle=True, seed=5, num_epochs=None).batch(64))

    iterator = stream()
    for _ in range(20):  # into the second epoch
        next(iterator)
    tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "ckpt" / "it"))
    expected = [next(iterator)["labels"].numpy().tolist() for _ in range(20)]
    restored = stream()
    tf.train.Checkpoint(iterator=restored).read(str(tmp_path / "ckpt" / "it")).assert_consumed()
    assert [next(restored)["labels"].numpy().tolist() for _ in range(20)] == expected
    assert sum(f.stat().st_size for f in (tmp_path / "ckpt").iterdir()) < 200_000


def test_a_label_outside_the_classes_is_one_line_naming_file_line_and_value(tiny_dir, tmp_path):
    for name in ("train.tsv", "dev.tsv"):
        _write(str(tmp_path), f"glue/sst2/{name}", "sentence\tlabel\nthe cat \t1\n")
    _write(str(tmp_path), "glue/sst2/test.tsv", "sentence\tlabel\nthe cat \t1\na dog \t2\n")
    sst2 = catalog.get_task("sst2")
    with pytest.raises(ValueError) as e:
        downstream.eval_targets(sst2, "validation", source="local", data_dir=str(tmp_path))
    message = str(e.value)
    path = os.path.join(str(tmp_path), "glue/sst2/test.tsv")
    assert (
        message.startswith(f"{path}:3: label '2' is not one of the task's classes ['0', '1']") and "\n" not in message
    )
    # The training split reads other files: still fine.
    assert downstream.eval_targets(sst2, "train", source="local", data_dir=str(tmp_path)) == [1, 1]

    _write(str(tmp_path), "glue/sst2/test.tsv", "sentence\tlabel\nthe cat\n")
    with pytest.raises(ValueError, match=r"test.tsv:2: 1 columns, expected 2"):
        downstream.eval_targets(sst2, "validation", source="local", data_dir=str(tmp_path))


def test_missing_files_are_one_line_naming_the_path_and_the_config_field(tmp_path):
    rte = catalog.get_task("rte")
    with pytest.raises(FileNotFoundError, match=r"glue/rte/train.tsv does not exist: config.finetune.data_dir=") as e:
        downstream.examples(rte, "validation", source="local", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="config.finetune.data_dir is empty"):
        downstream.examples(rte, "validation", source="local", data_dir="")
    _write(str(tmp_path), "translation/multi30k/train.en", "a\nb\n")
    _write(str(tmp_path), "translation/multi30k/train.de", "a\n")
    _write(str(tmp_path), "translation/multi30k/val.en", "a\n")
    _write(str(tmp_path), "translation/multi30k/val.de", "a\n")
    with pytest.raises(ValueError, match="train.en has 2 lines but .*train.de has 1"):
        downstream.eval_targets(catalog.get_task("multi30k"), "train", source="local", data_dir=str(tmp_path))


def test_local_file_spec_matches_the_catalog():
    for name, splits in local_files.TABLES.items():
        task = catalog.get_task(name)
        for tables in splits.values():
            for table in tables:
                assert sorted(i for _, i in table.label_ids) == list(range(task.num_classes))
                assert (table.sentence2 is not None) == task.is_pair
    assert set(local_files.LOCAL_TASKS) == {"sst2", "cola", "rte", "agnews", "multi30k"}
    assert all(set(task.metrics) <= set(metrics.METRICS) for task in catalog.DOWNSTREAM_TASKS.values())
