"""What a load run sends: the prompts of a prompt set, or synthetic prompts of an exact
length in the model's own tokens (counted by the server's tokenizer, e.g. llama.cpp's
``/tokenize``), so no separate tokenizer download is needed.

Synthetic prompts are drawn from a word list with a seed, each different, so a server's
prompt cache cannot serve one request from another.
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


@dataclass
class LoadPrompt:
    id: str
    messages: list[dict[str, str]]


def prompt_set(spec: str) -> list[LoadPrompt]:
    prompts = []
    for p in load_prompt_set(spec):
        messages = ([{"role": "system", "content": p.system}] if p.system else [])
        prompts.append(LoadPrompt(p.id, [*messages, {"role": "user", "content": p.text}]))
    return prompts


async def synthetic_prompts(client: ChatClient, tokens: int, *, seed: int = 0,
                            n: int = SYNTHETIC_PROMPTS) -> list[LoadPrompt]:
    """``n`` different prompts of exactly ``tokens`` tokens by the model's own tokenizer
    (the text of the user message; the chat template adds its own few)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        words = [f"{i}:"]
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
            elif len(words) > 1:
                words.pop()
            count = await client.count_tokens(" ".join(words)) or 0
        if count != tokens:
            raise KurabeError(f"load.prompt_tokens: cannot build a prompt of exactly {tokens} "
                              f"tokens with this model's tokenizer (got {count})")
        prompts.append(LoadPrompt(f"synthetic-{tokens}-{i}",
                                  [{"role": "user", "content": " ".join(words)}]))
    return prompts
