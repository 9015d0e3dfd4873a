"""What a load run sends: the prompts of a prompt set, or synthetic prompts of an exact
length in the model's own tokens (counted by the server's tokenizer, e.g. llama.cpp's
``/tokenize``), so no separate tokenizer download is needed.

Synthetic prompts are drawn from a word list with a seed. A few base prompts are built and
counted; every request then gets a variant of one of them with its first words swapped for
others that are one token each for this tokenizer (checked), so every request's prompt is
different (a server's prefix cache cannot serve one request from another) and of the same
length, without counting each one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kurabe import KurabeError
from kurabe.client import ChatClient
from kurabe.inputs import load_prompt_set

WORDS = ("river stone cloud maple lantern harbor copper meadow violet engine thunder "
         "garden silver pocket window marble ladder candle orbit forest signal basket "
         "falcon tunnel velvet anchor pepper glacier saddle mirror planet compass").split()
SYNTHETIC_PROMPTS = 16  # distinct synthetic prompts per model, used in turn


VARIANT_SLOTS = 3  # words swapped per request: 32 one-token words give 32,768 variants


@dataclass
class LoadPrompt:
    id: str
    messages: list[dict[str, str]]
    # Synthetic prompts: the user message's words 1..slots may be replaced by any of
    # ``swaps`` (each one token here) without changing the prompt's length in tokens.
    slots: int = 0
    swaps: tuple[str, ...] = ()

    def variant(self, index: int) -> LoadPrompt:
        """The ``index``-th variant: a different prompt of the same length for each index
        below len(swaps) ** slots (the prompt itself when it has no slots)."""
        if not self.slots or not self.swaps:
            return self
        words = self.messages[-1]["content"].split(" ")
        k = index
        for j in range(self.slots):
            words[1 + j] = self.swaps[k % len(self.swaps)]
            k //= len(self.swaps)
        return LoadPrompt(self.id, [*self.messages[:-1],
                                    {"role": "user", "content": " ".join(words)}])


def prompt_set(spec: str) -> list[LoadPrompt]:
    prompts = []
    for p in load_prompt_set(spec):
        messages = ([{"role": "system", "content": p.system}] if p.system else [])
        prompts.append(LoadPrompt(p.id, [*messages, {"role": "user", "content": p.text}]))
    return prompts


async def synthetic_prompts(client: ChatClient, tokens: int, *, seed: int = 0,
                            n: int = SYNTHETIC_PROMPTS) -> list[LoadPrompt]:
    """``n`` base prompts of exactly ``tokens`` tokens by the model's own tokenizer (the
    text of the user message; the chat template adds its own few), each with variant slots
    when the tokenizer allows (``LoadPrompt.variant``)."""
    rng = random.Random(seed)
    swaps = await _one_token_words(client)
    slots = min(VARIANT_SLOTS, max(tokens - 4, 0)) if len(swaps) >= 8 else 0
    prompts = []
    for i in range(n):
        # "i:" then the slot words (each one token), then words until the length is right
        words = [f"{i}:", *(swaps[:1] * slots)]
        count = await client.count_tokens(" ".join(words))
        if count is None:
            raise KurabeError("load.prompt_tokens: the server cannot count tokens with the "
                              "model's tokenizer (llama.cpp's /tokenize); use a prompt set "
                              "(load.prompts) for this model")
        # Add words while short, then fix the end word by word (a word may be several
        # tokens, so the count is checked each time); bounded, then said.
        while count < tokens - 8:
            words += [rng.choice(WORDS) for _ in range(max(1, (tokens - count) // 2))]
            count = await client.count_tokens(" ".join(words)) or 0
        for _ in range(4 * tokens + 20):
            if count == tokens:
                break
            if count < tokens:
                words.append(rng.choice(WORDS))
            elif len(words) > 1 + slots:
                words.pop()
            count = await client.count_tokens(" ".join(words)) or 0
        if count != tokens:
            raise KurabeError(f"load.prompt_tokens: cannot build a prompt of exactly {tokens} "
                              f"tokens with this model's tokenizer (got {count})")
        prompts.append(LoadPrompt(f"synthetic-{tokens}-{i}",
                                  [{"role": "user", "content": " ".join(words)}],
                                  slots, swaps if slots else ()))
    if slots:
        # a spot check: the last variant of the first prompts keeps the length
        last = len(swaps) ** slots - 1
        for p in prompts[:2]:
            if await client.count_tokens(p.variant(last).messages[-1]["content"]) != tokens:
                return [LoadPrompt(p.id, p.messages) for p in prompts]
    return prompts


async def _one_token_words(client: ChatClient) -> tuple[str, ...]:
    """The words of WORDS that are one token each after a space, for this tokenizer."""
    base = await client.count_tokens("0:")
    if base is None:
        return ()
    return tuple([w for w in WORDS if await client.count_tokens(f"0: {w}") == base + 1])
