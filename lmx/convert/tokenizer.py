"""A checkpoint's own tokenizer: imported as the lmx vocabulary that reads text the same way, exported as HF files.

Import takes, from the Hugging Face directory, the first of
  vocab.json + merges.txt     GPT-2 byte-level BPE          -> vocab_kind=byte_bpe, vocab_path=OUT/tokenizer
  vocab.txt                   BERT WordPiece                -> vocab_kind=wordpiece, vocab_path=OUT/tokenizer/vocab.txt
  spiece.model                SentencePiece (T5, ALBERT)    -> vocab_kind=unigram|bpe, vocab_path=.../spiece.model
  tokenizer.json only         a fast tokenizer's BPE or WordPiece model, converted to the files above
copies (or converts) it to OUT/tokenizer and loads it with lmx.data.vocab.load_vocabulary, so a file that is not a
vocabulary is one error before anything is written. Export writes the vocabulary of config.data back in the same
formats with a tokenizer_config.json naming transformers' tokenizer class, and returns the config.json token ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import ml_collections

from lmx.convert import ConversionError, hf_files
from lmx.convert.families import Family
from lmx.data import byte_bpe, wordpiece
from lmx.data import vocab as vocab_lib

DIRECTORY = "tokenizer"  # OUT/tokenizer of an import
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

# Special tokens of each family's own files where they differ from the vocabulary kind's convention
# (lmx.data.special_tokens.CONVENTIONS): ALBERT's SentencePiece model spells BERT's tokens.
FAMILY_TOKENS = {"albert": {"eos": "[SEP]", "cls": "[CLS]", "mask": "[MASK]"}}
# transformers' tokenizer class of each vocabulary kind, per family where it depends on it.
TOKENIZER_CLASSES = {
    "byte_bpe": "GPT2Tokenizer",
    "wordpiece": "BertTokenizer",
    ("unigram", "t5"): "T5Tokenizer",
    ("unigram", "switch_transformers"): "T5Tokenizer",
    ("unigram", "albert"): "AlbertTokenizer",
}


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """The config.data fields that make lmx read an imported tokenizer."""

    kind: str  # config.data.vocab_kind
    file: str  # inside the tokenizer directory ("" = the directory itself, byte_bpe)
    lower_case: bool  # config.data.vocab_lower_case (WordPiece)
    extra_ids: int  # config.data.extra_ids: T5's sentinels are ids of its tokenizer
    special_tokens: dict[str, str]  # config.data.special_tokens where the files differ from the kind's convention

    def fields(self, directory: str) -> dict[str, object]:
        path = os.path.join(directory, self.file) if self.file else directory
        fields = {"vocab_kind": self.kind, "vocab_path": path, "extra_ids": self.extra_ids}
        if self.kind == "wordpiece":
            fields["vocab_lower_case"] = self.lower_case
        return {**fields, **{f"special_tokens.{role}": token for role, token in self.special_tokens.items()}}

    def apply(self, data_config: ml_collections.ConfigDict, directory: str) -> None:
        for field, value in self.fields(directory).items():
            *parents, leaf = field.split(".")
            node = data_config
            for key in parents:
                node = node[key]
            node[leaf] = value

    def flags(self, directory: str) -> list[str]:
        return [f"--config.data.{field}={value}" for field, value in self.fields(directory).items()]


def _tokenizer_config(hf_dir: str) -> dict:
    path = os.path.join(hf_dir, TOKENIZER_CONFIG)
    return hf_files.read_json(path, "expected transformers' tokenizer settings") if os.path.isfile(path) else {}


def import_tokenizer(hf_dir: str, out_dir: str, family: Family) -> Tokenizer | None:
    """Copies or converts the tokenizer of `hf_dir` into `out_dir` (see the module docstring); None if it has none.
    Raises VocabularyError (lmx.data.special_tokens) or ConversionError for files that are not a vocabulary."""
    settings = _tokenizer_config(hf_dir)
    tokens = FAMILY_TOKENS.get(family.model_type, {})

    def present(*names):
        return all(os.path.isfile(os.path.join(hf_dir, n)) for n in names)

    if present("vocab.json", "merges.txt"):
        found, files = Tokenizer("byte_bpe", "", False, 0, tokens), ("vocab.json", "merges.txt")
    elif present("vocab.txt"):
        found = Tokenizer("wordpiece", "vocab.txt", bool(settings.get("do_lower_case", True)), 0, tokens)
        files = ("vocab.txt",)
    elif present("spiece.model"):
        extra_ids = settings.get("extra_ids", 100 if family.lmx_model == "encoder_decoder" else 0)  # T5Tokenizer's
        if not isinstance(extra_ids, int) or isinstance(extra_ids, bool) or extra_ids < 0:
            raise ConversionError(f"{hf_dir}/{TOKENIZER_CONFIG} has extra_ids={extra_ids!r}; expected a count >= 0")
        kind = _sentencepiece_kind(os.path.join(hf_dir, "spiece.model"))
        found, files = Tokenizer(kind, "spiece.model", False, extra_ids, tokens), ("spiece.model",)
    elif present(TOKENIZER_JSON):
        os.makedirs(out_dir)
        found = _convert_tokenizer_json(os.path.join(hf_dir, TOKENIZER_JSON), out_dir, settings, tokens)
        try:
            _load(found, out_dir)
        except ValueError as e:  # VocabularyError of the converted files: name the file they came from
            raise ConversionError(
                f"{os.path.join(hf_dir, TOKENIZER_JSON)} does not convert to a vocabulary: {e}"
            ) from e
        return found
    else:
        return None
    _load(found, hf_dir)  # checked where the user's files are, so errors name them
    os.makedirs(out_dir)
    for name in files:
        shutil.copyfile(os.path.join(hf_dir, name), os.path.join(out_dir, name))
    return found


def _load(found: Tokenizer, directory: str):
    path = os.path.join(directory, found.file) if found.file else directory
    return vocab_lib.load_vocabulary(path, found.kind, found.extra_ids, found.lower_case, found.special_tokens)


def _sentencepiece_kind(path: str) -> str:
    from lmx.data import spm_vocab

    model = spm_vocab.read_model(path, "unigram")
    return "bpe" if model.trainer_spec.model_type == spm_vocab.MODEL_TYPES["bpe"] else "unigram"


def _convert_tokenizer_json(path: str, out_dir: str, settings: dict, tokens: dict) -> Tokenizer:
    """A fast tokenizer's tokenizer.json -> vocab.json + merges.txt (byte-level BPE) or vocab.txt (WordPiece)."""
    spec = hf_files.read_json(path, "expected a `tokenizers` tokenizer.json")
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    vocab = model.get("vocab")
    kind = model.get("type")
    if kind == "BPE" and isinstance(vocab, dict) and isinstance(model.get("merges"), list):
        # merges are "a b" strings (tokenizers < 0.20) or [a, b] pairs
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        hf_files.write_json(vocab, os.path.join(out_dir, "vocab.json"))
        with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{m}\n" for m in merges))
        return Tokenizer("byte_bpe", "", False, 0, tokens)
    if kind == "WordPiece" and isinstance(vocab, dict):
        by_id = sorted(vocab.items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConversionError(f"{path}: the WordPiece vocabulary's ids are not 0..{len(by_id) - 1}")
        with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{token}\n" for token, _ in by_id))
        normalizer = spec.get("normalizer") or {}
        lower_case = bool(settings.get("do_lower_case", normalizer.get("lowercase", True)))
        return Tokenizer("wordpiece", "vocab.txt", lower_case, 0, tokens)
    raise ConversionError(
        f"{path} holds a {kind!r} tokenizer model, which lmx does not convert; lmx reads byte-level BPE "
        "(vocab.json + merges.txt), WordPiece (vocab.txt) and SentencePiece (spiece.model)"
    )


def export_tokenizer(config: ml_collections.ConfigDict, out_dir: str, family: Family) -> dict[str, int | None] | None:
    """Writes the files of config.data's vocabulary (vocab_path, or the cached auto-trained one) into `out_dir` with
    a tokenizer_config.json; returns the config.json token ids it implies, or None when there is no vocabulary."""
    data = config.data
    path = data.vocab_path or vocab_lib.cached_vocab_path(data)
    if not os.path.exists(path):
        return None
    vocabulary = vocab_lib.get_vocabulary(data)
    special = vocab_lib.special_ids(vocabulary)
    kind = data.vocab_kind
    settings: dict[str, object] = {"model_max_length": config.model.max_length}
    if kind == "byte_bpe":
        vocab_json, merges = byte_bpe.files_of(path)
        shutil.copyfile(vocab_json, os.path.join(out_dir, "vocab.json"))
        shutil.copyfile(merges, os.path.join(out_dir, "merges.txt"))
        with open(vocab_json, encoding="utf-8") as f:
            by_id = {i: token for token, i in json.load(f).items()}
        roles = {"bos_token": special.bos, "eos_token": special.eos, "unk_token": special.unk}
        settings.update(add_prefix_space=False, **{key: by_id[i] for key, i in roles.items() if i in by_id})
    elif kind == "wordpiece":
        shutil.copyfile(wordpiece.file_of(path), os.path.join(out_dir, "vocab.txt"))
        settings.update(do_lower_case=data.vocab_lower_case, strip_accents=None)
    else:
        shutil.copyfile(path, os.path.join(out_dir, "spiece.model"))
        settings.update(extra_ids=data.extra_ids)
    tokenizer_class = TOKENIZER_CLASSES.get(kind) or TOKENIZER_CLASSES.get((kind, family.model_type))
    if tokenizer_class:
        settings["tokenizer_class"] = tokenizer_class
    hf_files.write_json(settings, os.path.join(out_dir, TOKENIZER_CONFIG))
    ids = {"bos_token_id": special.bos, "eos_token_id": special.eos}
    return {key: value for key, value in ids.items() if key in family.token_ids}
