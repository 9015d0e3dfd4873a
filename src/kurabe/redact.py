"""Keep a secret (an API key) out of text that is stored, printed or raised."""

from __future__ import annotations

MASK = "[API key]"
# A text cut to a length can end inside the secret: a trailing piece this long is masked too.
MIN_PIECE = 6


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked, and a trailing start of it (a
    text cut inside the secret) as well."""
    if not secret or not text:
        return text
    text = text.replace(secret, MASK)
    for n in range(min(len(secret) - 1, len(text)), MIN_PIECE - 1, -1):
        if text.endswith(secret[:n]):
            return text[:-n] + MASK
    return text
