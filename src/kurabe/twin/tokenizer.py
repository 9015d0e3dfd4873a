"""A byte-level BPE tokenizer (GPT-2 style) of any vocabulary size that llama.cpp accepts.

Token ``b`` (0..255) is the single byte ``b`` in GPT-2's printable alphabet (``"Ġ"`` is a
space), so any text can be tokenized. :func:`synthesize` fills the rest of a vocabulary with
tokens that merges really build, so prompts come out in a plausible number of tokens and
random generation prints plausible text:

1. the merges of :data:`BASE_MERGES` (common English pairs, " the", " and", ...);
2. kana and Japanese punctuation, one token per character (with room for them);
3. the 20,992 CJK unified ideographs, one token per character (vocabularies of about 30k
   tokens and more);
4. space-led lowercase letter strings (" a" ... " zz" ... " zzz" ...), breadth first, up to
   the exact size;
5. the special tokens last: the defaults (:data:`DEFAULT_SPECIAL_TOKENS`) and every
   ``<|...|>`` token the chat template names.

:class:`VocabBuilder` is the underlying tool: bytes, merges (each adds its result as a token),
plain tokens and special tokens, in the order they are added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gguf

TT = gguf.TokenType
VT = gguf.GGUFValueType

# Special tokens: (text, token type). <think>/</think> are USER_DEFINED, as in Qwen3's own
# GGUFs (matched literally, shown in text).
DEFAULT_SPECIAL_TOKENS: tuple[tuple[str, int], ...] = (
    ("<|endoftext|>", TT.CONTROL),
    ("<|im_start|>", TT.CONTROL),
    ("<|im_end|>", TT.CONTROL),
    ("<think>", TT.USER_DEFINED),
    ("</think>", TT.USER_DEFINED),
    ("<start_of_turn>", TT.CONTROL),
    ("<end_of_turn>", TT.CONTROL),
)

# BPE merges on byte-level text (GPT-2 alphabet: "Ġ" is a space). Each merge adds its result
# as a token.
BASE_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"), ("h", "e"), ("Ġ", "a"), ("i", "n"), ("e", "r"), ("o", "n"), ("r", "e"),
    ("Ġ", "s"), ("a", "t"), ("e", "n"), ("o", "r"), ("Ġt", "he"), ("Ġ", "w"), ("e", "s"),
    ("i", "s"), ("Ġ", "o"), ("Ġ", "c"), ("i", "t"), ("a", "n"), ("Ġ", "b"), ("Ġ", "f"),
    ("Ġ", "p"), ("a", "r"), ("Ġ", "m"), ("in", "g"), ("l", "e"), ("o", "u"), ("Ġ", "d"),
    ("Ġ", "h"), ("a", "l"), ("Ġ", "i"), ("e", "d"), ("Ġa", "n"), ("Ġan", "d"), ("Ġo", "f"),
    ("Ġ", "l"), ("r", "o"), ("Ġt", "o"), ("Ġi", "s"), ("l", "l"),
)

#: The chat template of a twin that has none: ChatML.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_KANA = [chr(c) for c in (*range(0x3001, 0x3004), *range(0x3041, 0x3097), *range(0x30A1, 0x30FB),
                          0x30FC)]
_CJK = range(0x4E00, 0xA000)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TEMPLATE_SPECIAL = re.compile(r"<\|[A-Za-z0-9_.:\-]{1,64}\|>")
# End-of-turn tokens in order of preference when a template names several.
_EOT_TOKENS = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>")


# --------------------------------------------------------------------------------------------
# Byte-level text
# --------------------------------------------------------------------------------------------


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_B2U = byte_to_unicode()
_U2B = {ch: b for b, ch in _B2U.items()}


def bpe_text(text: str) -> str:
    """Plain text -> the byte-level form stored in the vocabulary (" the" -> "Ġthe")."""
    return "".join(_B2U[b] for b in text.encode("utf-8"))


def plain_text(token: str) -> str:
    """Byte-level vocabulary text -> plain text (inverse of :func:`bpe_text`)."""
    return bytes(_U2B[ch] for ch in token).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# Building a vocabulary
# --------------------------------------------------------------------------------------------


class VocabBuilder:
    """Tokens (byte-level text or special text), their types and the merges, in id order."""

    def __init__(self, *, byte_tokens: bool = True) -> None:
        self.tokens: list[str] = []
        self.types: list[int] = []
        self.merges: list[str] = []
        self._ids: dict[str, int] = {}
        if byte_tokens:
            for b in range(256):
                self.add(_B2U[b])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, text: str) -> bool:
        return text in self._ids

    def id(self, text: str) -> int:
        return self._ids[text]

    def add(self, text: str, ttype: int = TT.NORMAL) -> int:
        """Add a token as stored (byte-level text for NORMAL tokens)."""
        if text in self._ids:
            raise ValueError(f"token {text!r} is already in the vocabulary")
        self._ids[text] = len(self.tokens)
        self.tokens.append(text)
        self.types.append(int(ttype))
        return self._ids[text]

    def merge(self, a: str, b: str) -> bool:
        """Add the merge ``a b`` (byte-level texts) and its result as a token if it is new.
        Returns whether a token was added."""
        self.merges.append(f"{a} {b}")
        if a + b in self._ids:
            return False
        self.add(a + b)
        return True


def template_special_tokens(template: str | None) -> list[str]:
    """The ``<|...|>`` tokens a chat template names, in order of first use."""
    found: list[str] = []
    for m in _TEMPLATE_SPECIAL.finditer(template or ""):
        if m.group(0) not in found:
            found.append(m.group(0))
    return found


def _char_merges(chars: Iterable[str]) -> list[tuple[str, str]]:
    """Merges that build each (multi-byte) character from its bytes, prefixes first."""
    merges: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ch in chars:
        units = [_B2U[b] for b in ch.encode("utf-8")]
        acc = units[0]
        for u in units[1:]:
            if acc + u not in seen:
                seen.add(acc + u)
                merges.append((acc, u))
            acc += u
    return merges


@dataclass
class Tokenizer:
    """A vocabulary ready to store: ``metadata()`` gives the ``tokenizer.ggml.*`` keys."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    add_bos: bool = False
    model: str = "gpt2"
    pre: str = "qwen2"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def metadata(self) -> dict[str, tuple[Any, VT, VT | None]]:
        return {
            "tokenizer.ggml.model": (self.model, VT.STRING, None),
            "tokenizer.ggml.pre": (self.pre, VT.STRING, None),
            "tokenizer.ggml.tokens": (self.tokens, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.token_type": (self.types, VT.ARRAY, VT.INT32),
            "tokenizer.ggml.merges": (self.merges, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.bos_token_id": (self.bos_id, VT.UINT32, None),
            "tokenizer.ggml.eos_token_id": (self.eos_id, VT.UINT32, None),
            "tokenizer.ggml.add_bos_token": (bool(self.add_bos), VT.BOOL, None),
            "tokenizer.ggml.add_eos_token": (False, VT.BOOL, None),
        }


def synthesize(n_vocab: int, *, chat_template: str | None = None,
               special_tokens: Sequence[tuple[str, int]] = DEFAULT_SPECIAL_TOKENS,
               add_bos: bool = False) -> Tokenizer:
    """A byte-level BPE vocabulary of exactly ``n_vocab`` tokens (see the module text).

    BOS is ``<|endoftext|>`` (the first special token); EOS is the end-of-turn token the
    chat template uses (``<end_of_turn>``, ``<|eot_id|>``, ``<|im_end|>``, ...)."""
    specials: list[tuple[str, int]] = list(special_tokens)
    names = {text for text, _ in specials}
    for text in template_special_tokens(chat_template):
        if text not in names:
            specials.append((text, TT.CONTROL))
            names.add(text)
    room = n_vocab - 256 - len(specials)
    if room < 0:
        raise ValueError(f"a vocabulary of {n_vocab} tokens cannot hold the 256 byte tokens "
                         f"and {len(specials)} special tokens")
    vb = VocabBuilder()
    target = 256 + room

    def merge_all(pairs: Iterable[tuple[str, str]]) -> None:
        for a, b in pairs:
            if len(vb) >= target:
                return
            if a in vb and b in vb and a + b not in vb:
                vb.merge(a, b)

    merge_all(BASE_MERGES)
    kana = _char_merges(_KANA)
    if target - len(vb) >= len(kana) + 1000:
        merge_all(kana)
    cjk = _char_merges(chr(c) for c in _CJK)
    if target - len(vb) >= len(cjk) + 2000:
        merge_all(cjk)
    # space-led letter strings, breadth first
    level = ["Ġ"]
    while len(vb) < target:
        nxt: list[str] = []
        for parent in level:
            for c in _LETTERS:
                if len(vb) >= target:
                    break
                word = parent + c
                if word not in vb:
                    vb.merge(parent, c)
                nxt.append(word)
        level = nxt
    for text, ttype in specials:
        vb.add(text, ttype)
    assert len(vb) == n_vocab
    template = chat_template or ""
    eos = next((t for t in _EOT_TOKENS if t in template and t in vb), None)
    if eos is None:
        eos = "<|im_end|>" if "<|im_end|>" in vb else specials[0][0]
    return Tokenizer(vb.tokens, vb.types, vb.merges, bos_id=vb.id(specials[0][0]),
                     eos_id=vb.id(eos), add_bos=add_bos)
