"""Tokenizers: byte-level BPE trained here, a plain byte tokenizer, a character tokenizer, or an
imported Hugging Face `tokenizer.json`, all behind one `Tokenizer` class wrapping `tokenizers.Tokenizer`.

The character tokenizer (`char_tokenizer`, ``--tokenizer char``) is nanoGPT's shakespeare_char
vocabulary: every distinct character of the corpus is a token, ids in code-point order, and
nothing else (no special tokens, so documents are concatenated without bos/eos). Tiny
Shakespeare gives the same 65 ids as nanoGPT's ``stoi``. A character outside the vocabulary
cannot be encoded: `encode` raises and names it.

Our own tokenizers put the special tokens first, so their ids are stable whatever the corpus:
0 ``<|bos|>``, 1 ``<|eos|>``, 2 ``<|pad|>``, 3 ``<|mask|>``, 4..35 ``<|sentinel_0|>`` ..
``<|sentinel_31|>`` (mask and sentinels are reserved for the encoder and seq2seq families). Then
come the 256 byte symbols (in code-point order of their GPT-2 byte-level characters), then merges.

Round trip: ``decode(encode(text)) == text`` for any Unicode string without lone surrogates, i.e.
anything UTF-8 can hold. That holds because there is no normalizer, the ByteLevel pre-tokenizer
adds no prefix space, every byte has a symbol, and special-token strings that occur *in the text*
are encoded as ordinary text (``encode_special_tokens``): special ids only ever come from the
``bos``/``eos`` flags or explicit ids, never from user text, so a corpus mentioning ``<|eos|>``
cannot end documents early. `decode` keeps special tokens unless ``skip_special=True``.

Files: `save` writes the standard Hugging Face ``tokenizer.json`` plus a small sidecar
``tokenizer_meta.json`` naming the kind and the token that plays each role (bos, eos, pad, mask,
sentinels). `load` reads the sidecar when present and otherwise infers the roles from our token
strings, so a bare ``tokenizer.json`` written by llmcycle loads too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from llmcycle.atomic import atomic_write_text

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
MASK = "<|mask|>"
NUM_SENTINELS = 32
SENTINELS = [f"<|sentinel_{i}|>" for i in range(NUM_SENTINELS)]
SPECIAL_TOKENS = [BOS, EOS, PAD, MASK, *SENTINELS]  # ids 0..35 in our tokenizers
TOKENIZER_FILE = "tokenizer.json"
META_SUFFIX = "_meta.json"  # tokenizer.json -> tokenizer_meta.json


class Tokenizer:
    """Text <-> token ids, with named special-token roles. Build with `train_bpe`,
    `byte_tokenizer`, `Tokenizer.load` or `Tokenizer.from_hf`."""

    def __init__(
        self,
        hf: HFTokenizer,
        kind: str,
        bos: str | None = BOS,
        eos: str | None = EOS,
        pad: str | None = PAD,
        mask: str | None = MASK,
        sentinels: Sequence[str] = tuple(SENTINELS),
    ) -> None:
        self._hf = hf
        self._hf.encode_special_tokens = True  # special strings in text stay text (see module doc)
        self.kind = kind
        self._roles = {"bos": bos, "eos": eos, "pad": pad, "mask": mask}
        self._sentinels = list(sentinels)
        for token in [t for t in self._roles.values() if t is not None] + self._sentinels:
            assert hf.token_to_id(token) is not None, f"special token {token!r} missing from the vocabulary"

    # ------------------------------------------------------------ ids

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def _role_id(self, role: str) -> int | None:
        token = self._roles[role]
        return None if token is None else self._hf.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def mask_id(self) -> int | None:
        return self._role_id("mask")

    @property
    def sentinel_ids(self) -> list[int]:
        return [self._hf.token_to_id(t) for t in self._sentinels]

    @property
    def special_ids(self) -> set[int]:
        """Ids of every special token: our roles, the sentinels and any the file marks special."""
        ids = {i for i, tok in self._hf.get_added_tokens_decoder().items() if tok.special}
        ids |= {i for i in (self.bos_id, self.eos_id, self.pad_id, self.mask_id) if i is not None}
        return ids | set(self.sentinel_ids)

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._hf.id_to_token(idx)

    # ------------------------------------------------------------ text

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        for role, wanted in (("bos", bos), ("eos", eos)):
            if wanted and self._role_id(role) is None:
                raise ValueError(f"this {self.kind} tokenizer has no {role} token; name one: from_hf(path, {role}=...)")
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._hf.encode(text, add_special_tokens=False).ids
        self._check_chars(text, ids)
        return self._wrap(ids, bos, eos)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """Encode many texts at once, in parallel inside the Rust library."""
        texts = list(texts)
        encodings = self._hf.encode_batch_fast(texts, add_special_tokens=False)
        for text, e in zip(texts, encodings):
            self._check_chars(text, e.ids)
        return [self._wrap(e.ids, bos, eos) for e in encodings]

    def _check_chars(self, text: str, ids: list[int]) -> None:
        """A character tokenizer drops characters it does not know; say so instead (one id per character)."""
        if self.kind == "char" and len(ids) != len(text):
            unknown = sorted({c for c in text if self._hf.token_to_id(c) is None})
            raise ValueError(f"characters {unknown!r} are not in this character tokenizer's vocabulary "
                             f"({self.vocab_size} characters of its training text); remove them from the text")

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    # ------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (into `path` if it is a folder) and its role sidecar; return the file."""
        path = _tokenizer_file(Path(path))
        meta = {"kind": self.kind, **self._roles, "sentinels": self._sentinels}
        atomic_write_text(path, self._hf.to_str(pretty=True))
        atomic_write_text(_meta_file(path), json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path_or_dir: str | Path) -> "Tokenizer":
        """Load what `save` wrote (a folder holding tokenizer.json, or the file itself)."""
        path = _tokenizer_file(Path(path_or_dir))
        if not path.is_file():
            raise ValueError(
                f"no tokenizer at {path}; run `llmcycle prepare` first or give the folder holding tokenizer.json"
            )
        hf = HFTokenizer.from_file(str(path))
        meta_path = _meta_file(path)
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            kind = meta.pop("kind")
            return cls(hf, kind, **meta)
        return cls._infer_roles(hf, path)

    @classmethod
    def _infer_roles(cls, hf: HFTokenizer, path: Path) -> "Tokenizer":
        if hf.token_to_id(BOS) is None:
            raise ValueError(
                f"{path} has no {BOS} token and no {_meta_file(path).name} sidecar; "
                "load an imported tokenizer with Tokenizer.from_hf(path, bos=..., eos=..., pad=...)"
            )
        present = {t: t if hf.token_to_id(t) is not None else None for t in (BOS, EOS, PAD, MASK)}
        sentinels = [t for t in SENTINELS if hf.token_to_id(t) is not None]
        kind = "byte" if hf.get_vocab_size() == len(SPECIAL_TOKENS) + 256 else "bpe"
        return cls(hf, kind, present[BOS], present[EOS], present[PAD], present[MASK], sentinels)

    @classmethod
    def from_hf(
        cls,
        tokenizer_json_path: str | Path,
        bos: str | None = None,
        eos: str | None = None,
        pad: str | None = None,
        mask: str | None = None,
    ) -> "Tokenizer":
        """Wrap an imported Hugging Face tokenizer.json; roles are token strings (e.g. eos="<|im_end|>")."""
        path = _tokenizer_file(Path(tokenizer_json_path))
        if not path.is_file():
            raise ValueError(f"no tokenizer.json at {path}")
        hf = HFTokenizer.from_file(str(path))
        for role, token in (("bos", bos), ("eos", eos), ("pad", pad), ("mask", mask)):
            if token is not None and hf.token_to_id(token) is None:
                raise ValueError(f"{role}={token!r} is not a token of {path}; pick one from its added_tokens")
        return cls(hf, "hf", bos, eos, pad, mask, sentinels=())


def _tokenizer_file(path: Path) -> Path:
    return path / TOKENIZER_FILE if path.suffix != ".json" else path


def _meta_file(path: Path) -> Path:
    return path.with_name(path.stem + META_SUFFIX)


# ---------------------------------------------------------------- construction


def _byte_level(model: models.Model) -> HFTokenizer:
    hf = HFTokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    return hf


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE on `texts`; special tokens get ids 0..35, then the 256 bytes.

    The vocabulary can come out smaller than `vocab_size` when the text has too few distinct
    pairs to merge; `Tokenizer.vocab_size` reports the real size.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size={vocab_size} must be at least {len(SPECIAL_TOKENS) + 256} (specials + bytes)")
    hf = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    assert [hf.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    return Tokenizer(hf, "bpe")


def byte_tokenizer() -> Tokenizer:
    """The 256 byte symbols and our specials, no merges: one token per UTF-8 byte."""
    symbols = SPECIAL_TOKENS + sorted(pre_tokenizers.ByteLevel.alphabet())
    hf = _byte_level(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    hf.add_special_tokens(SPECIAL_TOKENS)
    assert hf.get_vocab_size() == len(SPECIAL_TOKENS) + 256
    return Tokenizer(hf, "byte")


def char_tokenizer(chars: Iterable[str]) -> Tokenizer:
    """One token per distinct character, ids in code-point order (nanoGPT's shakespeare_char
    `stoi`); no special tokens. `chars`: the characters of the corpus (any iterable, repeats allowed)."""
    vocab = sorted(set(chars))
    if not vocab:
        raise ValueError("the character tokenizer needs a non-empty text to take its characters from")
    # BPE without merges and without a pre-tokenizer splits text into characters; Fuse joins them back.
    hf = HFTokenizer(models.BPE(vocab={c: i for i, c in enumerate(vocab)}, merges=[]))
    hf.decoder = decoders.Fuse()
    return Tokenizer(hf, "char", bos=None, eos=None, pad=None, mask=None, sentinels=())
