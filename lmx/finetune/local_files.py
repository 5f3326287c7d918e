"""The local copies of the downstream tasks, under config.finetune.data_dir (on the project's machines
../shared/data; see its README), read into {"sentence1", "sentence2", "label"} columns.

  task      train                                        validation
  sst2      glue/sst2/train.tsv + dev.tsv                glue/sst2/test.tsv (872 rows: the GLUE dev set)
  cola      glue/cola/train.tsv + val.tsv                glue/cola/dev.tsv (1,043: the GLUE dev set)
  rte       glue/rte/train.tsv + val.tsv                 glue/rte/dev.tsv (277: the GLUE dev set)
  agnews    agnews/test.csv minus validation (6,600)     1,000 rows of agnews/test.csv (AGNEWS_VALIDATION_ROWS)
  multi30k  translation/multi30k/train.{en,de}           translation/multi30k/val.{en,de} (1,014)

Formats: SST-2 `sentence<TAB>label` with a header; CoLA `source<TAB>label<TAB>mark<TAB>sentence` without one; RTE
`index<TAB>sentence1<TAB>sentence2<TAB>label` (entailment / not_entailment), train.tsv and dev.tsv with a header,
val.tsv without; AG News CSV `"label","title","description"` (labels 1-4; "\\" marks a line break and becomes a
space); Multi30k line-aligned plain text. Texts are stripped of surrounding white space.

AG News ships only its test set here, split without randomness: the AGNEWS_VALIDATION_ROWS rows whose
SHA-256(title TAB description) is lowest validate, the others train (stable across machines; file order kept).
A label outside the task's classes, a row with the wrong number of columns or a missing file raise one line naming
the file (and line).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os

import numpy as np

AGNEWS_VALIDATION_ROWS = 1000
_DATA_DIR_FIX = (
    "config.finetune.data_dir={data_dir!r} must be the folder holding glue/, agnews/ and translation/ "
    "(e.g. ../shared/data)"
)


@dataclasses.dataclass(frozen=True)
class TableFile:
    """A TSV or CSV file of one task: which columns hold the texts and the label, and the label's spellings."""

    path: str  # relative to data_dir
    header: bool  # the first row names the columns
    columns: int  # columns per row
    sentence1: int  # column of the first text
    sentence2: int | None  # column of the second text (None: single-sentence task)
    label: int  # column of the label
    label_ids: tuple[tuple[str, int], ...]  # the label's spelling in the file -> class id

    @property
    def delimiter(self) -> str:
        return "," if self.path.endswith(".csv") else "\t"


def _tsv(path, header, columns, sentence1, sentence2, label, label_ids):
    return TableFile(path, header, columns, sentence1, sentence2, label, tuple(label_ids.items()))


_BINARY = {"0": 0, "1": 1}
_RTE = {"entailment": 0, "not_entailment": 1}  # TFDS glue/rte's order


def _sst2(name, header=True):
    return _tsv(f"glue/sst2/{name}", header, 2, 0, None, 1, _BINARY)


def _cola(name):
    return _tsv(f"glue/cola/{name}", False, 4, 3, None, 1, _BINARY)


def _rte(name, header=True):
    return _tsv(f"glue/rte/{name}", header, 4, 1, 2, 3, _RTE)


AGNEWS = _tsv("agnews/test.csv", False, 3, 1, 2, 0, {str(i + 1): i for i in range(4)})
MULTI30K = {"train": "translation/multi30k/train", "validation": "translation/multi30k/val"}  # + .en / .de

# task -> split -> its files, concatenated in this order.
TABLES: dict[str, dict[str, tuple[TableFile, ...]]] = {
    "sst2": {"train": (_sst2("train.tsv"), _sst2("dev.tsv")), "validation": (_sst2("test.tsv"),)},
    "cola": {"train": (_cola("train.tsv"), _cola("val.tsv")), "validation": (_cola("dev.tsv"),)},
    "rte": {"train": (_rte("train.tsv"), _rte("val.tsv", header=False)), "validation": (_rte("dev.tsv"),)},
}
LOCAL_TASKS = (*TABLES, "agnews", "multi30k")


def _check_file(path: str, data_dir: str) -> None:
    if not data_dir:
        raise FileNotFoundError(
            "config.finetune.data_dir is empty; set it to the folder holding glue/, agnews/ and translation/ "
            "(e.g. ../shared/data)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: {_DATA_DIR_FIX.format(data_dir=data_dir)}")


def files_of(task: str, split: str, data_dir: str) -> list[str]:
    """The paths a local task's split reads."""
    if task in TABLES:
        return [os.path.join(data_dir, table.path) for table in TABLES[task][split]]
    if task == "agnews":
        return [os.path.join(data_dir, AGNEWS.path)]
    return [os.path.join(data_dir, MULTI30K[split] + suffix) for suffix in (".en", ".de")]


def check_files(task: str, data_dir: str) -> None:
    """FileNotFoundError naming the first file of `task` (either split) missing under data_dir."""
    for split in ("train", "validation"):
        for path in files_of(task, split, data_dir):
            _check_file(path, data_dir)


@functools.lru_cache(maxsize=32)
def _read_table(path: str, table: TableFile, version: tuple[int, int]) -> tuple[tuple[str, ...], tuple, tuple]:
    """(sentence1, sentence2, label) columns of one file; `version` (mtime, size) keys the cache only."""
    del version
    labels = dict(table.label_ids)
    sentence1, sentence2, label = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        # GLUE's TSVs quote nothing (RTE's texts hold quotes); AG News's CSV quotes every field.
        quoting = csv.QUOTE_MINIMAL if table.delimiter == "," else csv.QUOTE_NONE
        reader = csv.reader(f, delimiter=table.delimiter, quoting=quoting)
        for row in reader:
            if (table.header and reader.line_num == 1) or not row:  # the header; a blank line
                continue
            if len(row) != table.columns:
                raise ValueError(
                    f"{path}:{reader.line_num}: {len(row)} columns, expected {table.columns}; "
                    "is config.finetune.data_dir the right copy of the data?"
                )
            value = row[table.label].strip()
            if value not in labels:
                raise ValueError(
                    f"{path}:{reader.line_num}: label {value!r} is not one of the task's classes "
                    f"{sorted(labels)}; fix the file or point config.finetune.data_dir at a correct copy"
                )
            sentence1.append(row[table.sentence1].strip())
            sentence2.append(row[table.sentence2].strip() if table.sentence2 is not None else "")
            label.append(labels[value])
    return tuple(sentence1), tuple(sentence2), tuple(label)


def _version(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def _columns(sentence1, sentence2, label, dtype=np.int32) -> dict[str, np.ndarray]:
    return {
        "sentence1": np.array(sentence1, dtype=object),
        "sentence2": np.array(sentence2, dtype=object),
        "label": np.array(label, dtype=dtype),
    }


def _agnews(split: str, data_dir: str) -> dict[str, np.ndarray]:
    path = os.path.join(data_dir, AGNEWS.path)
    _check_file(path, data_dir)
    sentence1, sentence2, label = _read_table(path, AGNEWS, _version(path))
    # The original's "\" marks a line break inside a text.
    sentence1 = [" ".join(text.replace("\\", " ").split()) for text in sentence1]
    sentence2 = [" ".join(text.replace("\\", " ").split()) for text in sentence2]
    keys = [hashlib.sha256(f"{a}\t{b}".encode()).hexdigest() for a, b in zip(sentence1, sentence2, strict=True)]
    held_out = set(sorted(range(len(keys)), key=keys.__getitem__)[:AGNEWS_VALIDATION_ROWS])
    rows = [i for i in range(len(keys)) if (i in held_out) == (split == "validation")]
    return _columns([sentence1[i] for i in rows], [sentence2[i] for i in rows], [label[i] for i in rows])


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line
    return [line.strip() for line in lines]


def _multi30k(split: str, data_dir: str) -> dict[str, np.ndarray]:
    english, german = files_of("multi30k", split, data_dir)
    for path in (english, german):
        _check_file(path, data_dir)
    sources, targets = _lines(english), _lines(german)
    if len(sources) != len(targets):
        raise ValueError(
            f"{english} has {len(sources)} lines but {german} has {len(targets)}; expected line-aligned translations"
        )
    return _columns(sources, targets, [-1] * len(sources))


def read(task: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """{"sentence1": [n] str, "sentence2": [n] str, "label": [n] int32} of a local task's split, in file order."""
    if task == "agnews":
        return _agnews(split, data_dir)
    if task == "multi30k":
        return _multi30k(split, data_dir)
    columns = ([], [], [])
    for table in TABLES[task][split]:
        path = os.path.join(data_dir, table.path)
        _check_file(path, data_dir)
        for column, values in zip(columns, _read_table(path, table, _version(path)), strict=True):
            column.extend(values)
    return _columns(*columns)
