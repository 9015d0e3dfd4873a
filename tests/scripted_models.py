"""Scripted tiny models: GGUF files whose greedy output is a chosen text.

Built on :mod:`tiny_models` (qwen3 architecture, 1 layer). The model is a bigram chain: the
attention and FFN output projections are zero, so the residual stream carries only the
current token's embedding; the tokens of the chain get orthonormal (one-hot) embeddings, and
the output matrix makes each chain token score its successor highest. Served by a real
llama.cpp server with a real chat template, the model therefore writes its script whatever the
prompt says:

* the chain starts at the last token of the template's generation prompt (the newline after
  ``<|im_start|>assistant``, after a pre-opened ``<think>``, or ``assistant`` after Harmony's
  ``<|start|>``), so the first generated token is the first piece of the script;
* it ends with the end-of-generation token (``<|im_end|>``, Harmony's ``<|return|>``), or, with
  ``loop_from``, jumps back and repeats until ``max_tokens``;
* when EOS is banned (``ignore_eos``, kurabe's fixed-length mode) the last piece continues at
  the first one, so a fixed-length request gets exactly ``max_tokens`` tokens;
* because the model only looks at the last token, a prompt that ends inside the chain
  continues from there: a Qwen3-style template that answers ``enable_thinking=false`` with an
  empty ``<think>\\n\\n</think>\\n\\n`` block ends on the ``\\n\\n`` piece that follows
  ``</think>`` in the script, so the model answers straight away without reasoning, and a
  reasoning budget that forces ``</think>`` early leads into the answer too.

A script is split into pieces, one token each, along llama.cpp's qwen2 pre-tokenizer
(words with their leading space, single digits, punctuation runs, newline runs) and the special
tokens. Every piece must be a distinct token, so a piece that repeats (or equals the start
token) is joined to its neighbour. BPE merges are added so that the model's own tokenizer
turns the text of each piece back into that single token (``/tokenize`` of the reasoning then
counts the tokens that were generated).

Main entry points: :func:`write_scripted` and the ready-made :data:`FIXTURES`
(:func:`write_fixture`, :func:`write_fixtures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import gguf
import jinja2.sandbox
import numpy as np
import regex

from tiny_models import (
    BASE_MERGES,
    DEFAULT_SPECIAL_TOKENS,
    TinyModel,
    bpe_text,
    model_layout,
    plain_text,
    write_model,
)

TT = gguf.TokenType

# --------------------------------------------------------------------------------------------
# Chat templates
# --------------------------------------------------------------------------------------------

# Qwen3's structure: history reasoning rendered as <think>…</think>, thinking on by default,
# enable_thinking=false answered with an empty think block after the generation prompt.
QWEN3_LIKE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.reasoning_content %}"
    "{{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# A template that opens <think> itself (DeepSeek-R1 distills, Qwen3 thinking-only releases):
# the output starts inside the reasoning.
QWEN3_OPEN_TEMPLATE = QWEN3_LIKE_TEMPLATE.replace(
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}",
    "{{- '<think>\\n' }}",
)

# Plain ChatML: a model whose template knows nothing about thinking.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# gpt-oss's Harmony layout, reduced to what a chat needs. It contains <|channel|>, which is
# what makes llama.cpp pick its gpt-oss parser.
HARMONY_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'developer' %}"
    "{{- '<|start|>developer<|message|>' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'user' %}"
    "{{- '<|start|>user<|message|>' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- if message.reasoning_content %}"
    "{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.reasoning_content"
    " + '<|end|>' }}"
    "{%- endif %}"
    "{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
)

# The o200k_harmony special tokens. With <|return|>, <|call|> and <|end|> all present,
# llama.cpp takes <|end|> off its end-of-generation list, as for gpt-oss.
HARMONY_SPECIAL_TOKENS: tuple[tuple[str, int], ...] = (
    ("<|start|>", TT.CONTROL),
    ("<|end|>", TT.CONTROL),
    ("<|message|>", TT.CONTROL),
    ("<|channel|>", TT.CONTROL),
    ("<|constrain|>", TT.CONTROL),
    ("<|return|>", TT.CONTROL),
    ("<|call|>", TT.CONTROL),
)

# --------------------------------------------------------------------------------------------
# The model's own tokenizer, simulated (byte-level BPE with llama.cpp's qwen2 pre-tokenizer)
# --------------------------------------------------------------------------------------------

QWEN2_PRETOKENIZER = regex.compile(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class BpeTokenizer:
    """What llama.cpp's tokenizer does with a tiny model's vocabulary: split on special
    tokens, pre-tokenize (qwen2), then apply the merges lowest rank first, leftmost first.
    Tokens are returned as stored (byte-level text, or the special token's text)."""

    def __init__(self, special: Sequence[str], merges: Sequence[tuple[str, str]] = BASE_MERGES):
        self.special = sorted(set(special), key=len, reverse=True)
        self.merges: list[tuple[str, str]] = []
        self.rank: dict[tuple[str, str], int] = {}
        for a, b in merges:
            self.add_merge(a, b)

    def add_merge(self, a: str, b: str) -> None:
        if (a, b) not in self.rank:
            self.rank[(a, b)] = len(self.merges)
            self.merges.append((a, b))

    def bpe(self, word: str) -> list[str]:
        """One pre-token, given as byte-level text."""
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.rank.get((a, b), -1), i) for i, (a, b) in
                      enumerate(pairwise(parts))]
            ranked = [(r, i) for r, i in ranked if r >= 0]
            if not ranked:
                break
            _, i = min(ranked)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def split_special(self, text: str) -> list[tuple[str, bool]]:
        """[(segment, is_special)] in order."""
        if not self.special:
            return [(text, False)] if text else []
        pattern = "(" + "|".join(regex.escape(s) for s in self.special) + ")"
        out = []
        for i, seg in enumerate(regex.split(pattern, text)):
            if seg:
                out.append((seg, i % 2 == 1))
        return out

    def tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        for seg, special in self.split_special(text):
            if special:
                out.append(seg)
                continue
            for word in QWEN2_PRETOKENIZER.findall(seg):
                out.extend(self.bpe(bpe_text(word)))
        return out

    def make_single_token(self, text: str) -> None:
        """Add merges (ranked after all others) until ``text`` (one pre-token) is one token."""
        word = bpe_text(text)
        for _ in range(4 * len(word) + 4):
            parts = self.bpe(word)
            if len(parts) == 1:
                return
            self.add_merge(parts[0], parts[1])
        raise RuntimeError(f"could not make {text!r} a single token")


def render_template(template: str, messages: Sequence[Mapping[str, Any]] | None = None,
                    **kwargs: Any) -> str:
    """The prompt a Jinja chat template gives (as llama.cpp renders it, for simple templates)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = list(messages or [{"role": "user", "content": "Hello"}])
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            **kwargs)


# --------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------


@dataclass
class ScriptedModel:
    """A written scripted model and what it will say.

    ``pieces`` are the generated tokens' texts in order (the script); after the last piece the
    model stops (``eos``) or, when ``loop_index`` is set, continues at ``pieces[loop_index]``.
    ``start`` is the prompt token the chain starts from.
    """

    path: Path
    tiny: TinyModel
    pieces: tuple[str, ...]
    start: str
    eos: str
    loop_index: int | None
    chat_template: str
    tokenizer: BpeTokenizer
    single_tokens: frozenset[str] = field(default_factory=frozenset)  # texts -> 1 token

    @property
    def text(self) -> str:
        """Everything the model writes before EOS (one pass of the script when it loops)."""
        return "".join(self.pieces)

    @property
    def ends(self) -> bool:
        return self.loop_index is None

    @property
    def n_tokens(self) -> int:
        """Tokens generated up to EOS (EOS itself not counted); looping scripts: one pass."""
        return len(self.pieces)

    def generated(self, n_tokens: int, *, start_at: int = 0, ignore_eos: bool = False) -> str:
        """The text of the first ``n_tokens`` generated tokens, starting at piece ``start_at``
        (e.g. the piece after which a prompt ended). Stops early at EOS unless ``ignore_eos``
        (EOS banned: the script starts again)."""
        out, i = [], start_at
        for _ in range(n_tokens):
            if i >= len(self.pieces):
                if self.loop_index is None and not ignore_eos:
                    break
                i = self.loop_index or 0
            out.append(self.pieces[i])
            i += 1
        return "".join(out)

    def piece_index(self, text: str) -> int:
        return self.pieces.index(text)

    def tokenize(self, text: str) -> list[str]:
        """Token texts (plain) that the model's tokenizer gives for ``text``."""
        return [t if t in self.tokenizer.special else plain_text(t)
                for t in self.tokenizer.tokenize(text)]


def _units(text: str, tokenizer: BpeTokenizer) -> list[str]:
    """The script cut at special tokens and pre-token boundaries: the smallest pieces."""
    units: list[str] = []
    for seg, special in tokenizer.split_special(text):
        units.extend([seg] if special else QWEN2_PRETOKENIZER.findall(seg))
    return units


def plan_pieces(units: Sequence[str], taken: set[str]) -> list[str]:
    """Join units into pieces that are all distinct and not in ``taken`` (the start token):
    a repeated unit is joined to the units after it (to the piece before it at the end)."""
    pieces: list[str] = []
    used = set(taken)
    i = 0
    while i < len(units):
        piece, i = units[i], i + 1
        while piece in used and i < len(units):
            piece, i = piece + units[i], i + 1
        while piece in used:
            if not pieces:
                raise ValueError(f"script cannot be split into distinct tokens near {piece!r}")
            prev = pieces.pop()
            used.discard(prev)
            piece = prev + piece
        pieces.append(piece)
        used.add(piece)
    return pieces


def write_scripted(
    path: str | Path,
    script: str | Sequence[str],
    *,
    chat_template: str = QWEN3_LIKE_TEMPLATE,
    start_after: str | None = None,
    loop_from: str | int | None = None,
    harmony_tokens: bool | None = None,
    eos: str | None = None,
    name: str = "scripted",
    logit_scale: float = 4.0,
) -> ScriptedModel:
    """Write a qwen3 model whose greedy output is ``script`` and return its description.

    * ``script``: the text to write (split into pieces as the module docstring says), or a
      list of pieces, one token each (they must be distinct; a piece that is a special
      token's text is that special token).
    * ``chat_template``: stored in the GGUF (``tokenizer.chat_template``).
    * ``start_after``: the prompt token the chain starts from; default: the last token of the
      template's generation prompt (rendered with one user message).
    * ``loop_from``: None: end with EOS after the script. Otherwise the script never ends: after
      the last piece it continues at the first piece that starts with this text, or at this
      piece index, until ``max_tokens``.
    * ``harmony_tokens``: add the Harmony special tokens (``<|channel|>`` …) to the vocabulary;
      default: when the template contains ``<|channel|>``. Without them, Harmony markers in a
      script are plain text, written as ordinary tokens (``<|``, ``channel``, ``|>``).
    * ``eos``: end-of-generation token; default ``<|return|>`` with Harmony tokens, else
      ``<|im_end|>``.
    * ``logit_scale``: the successor's output weight; its logit is this times sqrt(n_embd)
      (32 by default, every other token 0), so sampling at any usual temperature follows
      the script too.
    """
    path = Path(path)
    if harmony_tokens is None:
        harmony_tokens = "<|channel|>" in chat_template
    special_tokens = DEFAULT_SPECIAL_TOKENS + (HARMONY_SPECIAL_TOKENS if harmony_tokens else ())
    if eos is None:
        eos = "<|return|>" if harmony_tokens else "<|im_end|>"
    specials = [t for t, _ in special_tokens]
    tokenizer = BpeTokenizer(specials)

    if start_after is None:  # the generation prompt's last special token or pre-token
        segment, special = tokenizer.split_special(render_template(chat_template))[-1]
        start = segment if special else QWEN2_PRETOKENIZER.findall(segment)[-1]
    else:
        start = start_after
    start_stored = start if start in specials else bpe_text(start)
    if start not in specials:
        if len(QWEN2_PRETOKENIZER.findall(start)) != 1:
            raise ValueError(f"start_after {start!r} is not one token of the prompt")
        tokenizer.make_single_token(start)

    if isinstance(script, str):
        pieces = plan_pieces(_units(script, tokenizer), {start})
    else:
        pieces = list(script)
        if len(set(pieces)) != len(pieces) or start in pieces:
            raise ValueError("script pieces must be distinct and differ from the start token "
                             f"{start!r}")
    if not pieces or any(p == "" for p in pieces):
        raise ValueError("empty script or empty piece")

    loop_index: int | None = None
    if isinstance(loop_from, int) and not isinstance(loop_from, bool):
        loop_index = loop_from
    elif loop_from is not None:
        text, offset = "".join(pieces), 0
        for i, piece in enumerate(pieces):
            if text.startswith(loop_from, offset):
                loop_index = i
                break
            offset += len(piece)
        else:
            raise ValueError(f"loop_from {loop_from!r} does not start a piece of {pieces}")
    if loop_index is not None and not 0 <= loop_index < len(pieces):
        raise ValueError(f"loop_from index {loop_index} outside the script")

    # Merges that make each one-pre-token piece come back as one token.
    single: set[str] = set()
    for piece in pieces:
        if piece in specials:
            continue
        # A joined piece ("\nThe" after "<think>") cannot come back as one token; what is
        # left of it at the edge of a stripped text ("The") can.
        for text in (piece, piece.strip()):
            if text and len(QWEN2_PRETOKENIZER.findall(text)) == 1:
                tokenizer.make_single_token(text)
                single.add(text)
                break
    if start_after is None:
        now = tokenizer.tokenize(render_template(chat_template))[-1]
        if now != start_stored:
            raise ValueError(f"the script's merges change the generation prompt's last token "
                             f"({start_stored!r} -> {now!r}); pass start_after")
    extra_merges = tokenizer.merges[len(BASE_MERGES):]
    base_vocab = set(model_layout("qwen3", merges_extra=extra_merges, special_tokens=special_tokens,
                                  eos_token=eos).tokens)
    vocab_extra = [p for p in pieces if p not in specials and bpe_text(p) not in base_vocab]

    layout = dict(n_layers=1, n_ff=32, vocab_extra=vocab_extra, merges_extra=extra_merges,
                  special_tokens=special_tokens, eos_token=eos, chat_template=chat_template,
                  name=name)
    chain = [start, *pieces]
    n_embd = max(64, -(-len(chain) // 64) * 64)
    tiny = model_layout("qwen3", n_embd=n_embd, **layout)

    def tid(text: str) -> int:
        return tiny.tokens.index(text if text in specials else bpe_text(text))

    ids = [tid(t) for t in chain]
    eos_id = tid(eos)
    emb = np.random.default_rng(1).standard_normal((tiny.n_vocab, n_embd)) * 0.02
    out = np.zeros((tiny.n_vocab, n_embd))
    for k, token in enumerate(ids):
        emb[token] = 0.0
        emb[token, k] = 1.0
    for k in range(len(chain)):
        if k + 1 < len(chain):
            out[ids[k + 1], k] += logit_scale
        elif loop_index is None:
            out[eos_id, k] += logit_scale
            out[ids[1], k] += logit_scale / 2  # runner-up: what comes when EOS is banned
        else:
            out[ids[1 + loop_index], k] += logit_scale

    overrides: dict[str, np.ndarray] = {"token_embd.weight": emb, "output.weight": out}
    for spec in tiny.tensors:  # silence attention and FFN: the residual is the embedding
        if spec.name.endswith(("attn_output.weight", "ffn_down.weight")):
            overrides[spec.name] = np.zeros(tuple(reversed(spec.shape)))
    written = write_model(path, "qwen3", n_embd=n_embd, tensor_overrides=overrides, **layout)
    return ScriptedModel(path=path, tiny=written, pieces=tuple(pieces), start=start, eos=eos,
                         loop_index=loop_index, chat_template=chat_template, tokenizer=tokenizer,
                         single_tokens=frozenset(single))


# --------------------------------------------------------------------------------------------
# Ready-made fixtures
# --------------------------------------------------------------------------------------------

THINK_REASONING = ("The user asks which city is Japan's capital. Tokyo became it during the "
                   "Meiji era, so reply briefly in Japanese.")
THINK_ANSWER = "日本の首都は東京です。人口はおよそ千四百万人で、政治と経済の中心でもあります。"
LOOP_REASONING = "Hmm, wait. Let me check that again from the start."
HARMONY_REASONING = "User wants a greeting in Japanese; keep it short."
HARMONY_ANSWER = "こんにちは、元気ですか？"
STRAY_ANSWER = "答えは4です。"
STRAY_TAIL = "以上です。"
PLAIN_ANSWER = "富士山は日本で一番高い山で、標高は3776メートルあります。"


@dataclass(frozen=True)
class FixtureSpec:
    """A ready-made scripted model: its script, its template and what the script says."""

    script: str
    chat_template: str
    reasoning: str  # the script's reasoning, without the markers around it ("" when none)
    answer: str  # the script's answer, without the markers around it ("" when none)
    loop_from: str | None = None
    harmony_tokens: bool | None = None
    note: str = ""


FIXTURES: dict[str, FixtureSpec] = {
    # (a) think, then answer (Qwen3-style: the model opens <think> itself)
    "think": FixtureSpec(
        script=f"<think>\n{THINK_REASONING}\n</think>\n\n{THINK_ANSWER}",
        chat_template=QWEN3_LIKE_TEMPLATE, reasoning=THINK_REASONING, answer=THINK_ANSWER,
        note="<think> reasoning </think> then a Japanese answer; enable_thinking=false skips "
             "straight to the answer"),
    # (b) the template opens <think>; the reasoning loops and never closes
    "think_forever": FixtureSpec(
        script=f"{LOOP_REASONING} ", chat_template=QWEN3_OPEN_TEMPLATE,
        reasoning=LOOP_REASONING, answer="", loop_from="Hmm",
        note="reasoning that repeats until max_tokens, inside a template-opened <think>"),
    # (c) Harmony (gpt-oss): analysis channel, then final channel
    "harmony": FixtureSpec(
        script=(f"<|channel|>analysis<|message|>{HARMONY_REASONING}<|end|>"
                f"<|start|>assistant<|channel|>final<|message|>{HARMONY_ANSWER}"),
        chat_template=HARMONY_TEMPLATE, reasoning=HARMONY_REASONING, answer=HARMONY_ANSWER,
        note="gpt-oss channels with real special tokens and a template llama.cpp routes to its "
             "gpt-oss parser"),
    # (d) Harmony from a model whose tokenizer lacks the Harmony special tokens: the markers
    #     are plain text, so its <|return|> is text too (the model then stops with its own EOS).
    #     The template routes to the gpt-oss parser, which matches the markers literally and
    #     leaves the trailing <|return|> in the answer.
    "harmony_leak": FixtureSpec(
        script=(f"<|channel|>analysis<|message|>{HARMONY_REASONING}<|end|>"
                f"<|start|>assistant<|channel|>final<|message|>{HARMONY_ANSWER}<|return|>"),
        chat_template=HARMONY_TEMPLATE, harmony_tokens=False,
        reasoning=HARMONY_REASONING, answer=HARMONY_ANSWER,
        note="Harmony markers as plain text; <|return|> leaks into the answer"),
    # (d') the same plain-text Harmony under a Qwen3-style template: no parser expects it, so
    #     every marker reaches the content
    "harmony_unparsed": FixtureSpec(
        script=(f"<|channel|>analysis<|message|>{HARMONY_REASONING}<|end|>"
                f"<|start|>assistant<|channel|>final<|message|>{HARMONY_ANSWER}"),
        chat_template=QWEN3_LIKE_TEMPLATE, harmony_tokens=False,
        reasoning=HARMONY_REASONING, answer=HARMONY_ANSWER,
        note="Harmony markers as plain text under a Qwen3-style template"),
    # (e) a model whose template does not think, with a stray </think> in its answer
    "stray_close": FixtureSpec(
        script=f"{STRAY_ANSWER}</think>\n\n{STRAY_TAIL}", chat_template=CHATML_TEMPLATE,
        reasoning="", answer=f"{STRAY_ANSWER}</think>\n\n{STRAY_TAIL}",
        note="ChatML template, stray </think> mid-answer"),
    # (f) a non-thinking model with a fixed answer (with EOS banned it repeats the answer)
    "plain": FixtureSpec(
        script=PLAIN_ANSWER, chat_template=CHATML_TEMPLATE, reasoning="", answer=PLAIN_ANSWER,
        note="ChatML template, a fixed Japanese answer"),
}


def write_fixture(name: str, directory: str | Path) -> ScriptedModel:
    spec = FIXTURES[name]
    return write_scripted(Path(directory) / f"{name}.gguf", spec.script,
                          chat_template=spec.chat_template, loop_from=spec.loop_from,
                          harmony_tokens=spec.harmony_tokens, name=f"scripted-{name}")


def write_fixtures(directory: str | Path) -> dict[str, ScriptedModel]:
    return {name: write_fixture(name, directory) for name in FIXTURES}
