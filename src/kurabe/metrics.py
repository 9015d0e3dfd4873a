"""Per-request speed metrics, computed from one ``StreamRecord`` (formulas: docs/metrics.md).

Pure functions of the recorded stream: the store keeps the stream, so every figure here can
be recomputed later. A metric that the record cannot support is ``None``, never zero.
"""

from __future__ import annotations

import unicodedata
from itertools import pairwise

import regex

from kurabe.records import SpeedMetrics, StreamRecord
from kurabe.thinking import outcome, split_stream

_GRAPHEME = regex.compile(r"\X")


def count_chars(text: str) -> int:
    """Characters = Unicode code points after NFKC normalisation (half-width kana fold, etc.)."""
    return len(unicodedata.normalize("NFKC", text))


def count_graphemes(text: str) -> int:
    """User-perceived characters: extended grapheme clusters of the NFKC text."""
    return len(_GRAPHEME.findall(unicodedata.normalize("NFKC", text)))


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _output_tokens(rec: StreamRecord) -> tuple[int | None, str]:
    if rec.usage and rec.usage.get("completion_tokens") is not None:
        return int(rec.usage["completion_tokens"]), "server"
    if rec.timings and rec.timings.get("predicted_n") is not None:
        return int(rec.timings["predicted_n"]), "server"
    if rec.chunks:
        return len(rec.chunks), "chunks"
    return None, "chunks"


def _cached_tokens(rec: StreamRecord) -> int | None:
    if rec.timings and rec.timings.get("cache_n") is not None:
        return int(rec.timings["cache_n"])
    details = (rec.usage or {}).get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    return None


# A request whose client-clock decode rate differs from the server's own by more than this
# (either way) is timed on the server's clock: the client could not resolve its tokens.
CLOCK_AGREEMENT_TOLERANCE = 0.10


def client_decode_rate(rec: StreamRecord) -> tuple[float | None, str | None]:
    """Decode tokens/s on the client's clock, and how its tokens were attributed.

    The tokens generated after the first text chunk up to the last one, over the time between
    the two chunks' arrivals. ``server``: counted by the server's running count sent with those
    two chunks (a chunk can carry several tokens, the first one included); else ``assumed``:
    the first chunk held the first token and the last chunk the last, ``output_tokens − 1``."""
    chunks = rec.chunks
    n_out, _ = _output_tokens(rec)
    if not chunks or n_out is None:
        return None, None
    first, last = chunks[0].n_tokens, chunks[-1].n_tokens
    if first is not None and last is not None and 1 <= first <= last <= n_out:
        tokens, attribution = last - first, "server"
    else:
        tokens, attribution = n_out - 1, "assumed"
    window = chunks[-1].t_s - chunks[0].t_s
    if tokens < 1 or window <= 0:
        return None, None
    return tokens / window, attribution


def _phase_rate(tokens: int | None, t_first: float | None, t_last: float | None) -> float | None:
    if tokens is None or tokens < 2 or t_first is None or t_last is None or t_last <= t_first:
        return None
    return (tokens - 1) / (t_last - t_first)


def speed_metrics(rec: StreamRecord, *, starts_in_reasoning: bool | None = None,
                  reasoning_tokens: int | None = None,
                  reasoning_tokens_source: str | None = None,
                  answer_phase_tokens: int | None = None) -> SpeedMetrics:
    """Metrics of one request. ``reasoning_tokens``: counted by the model's own tokenizer
    (or the server) when the caller could; otherwise estimated as one per reasoning chunk.
    ``answer_phase_tokens``: the answer text's own tokens (by the model's tokenizer), for the
    answer-phase rate; output − reasoning tokens would also count the markers between the
    phases and the end token, which are not streamed inside the answer's time span."""
    chunks = rec.chunks
    timed = split_stream(rec.timed_chunks(), starts_in_reasoning=starts_in_reasoning,
                         finish_reason=rec.finish_reason)
    split = timed.split
    # Times run from the moment the client began writing the request on its open connection,
    # when the transport says; the client's own time before that is send_delay_s.
    t_sent = rec.t_written_s or 0.0
    ttft = (chunks[0].t_s - t_sent) if chunks else None
    window = (chunks[-1].t_s - chunks[0].t_s) if chunks else None  # first token to last token

    prompt_tokens = (rec.usage or {}).get("prompt_tokens")
    if prompt_tokens is None and rec.timings:
        prompt_tokens = rec.timings.get("prompt_n")
    n_out, source = _output_tokens(rec)

    timings = rec.timings or {}
    server_decode = timings.get("predicted_per_second")
    client_decode, attribution = client_decode_rate(rec)
    agreement = (client_decode / server_decode) if client_decode and server_decode else None
    # The headline decode rate is the client's clock unless the client could not resolve the
    # tokens (no figure, or beyond the tolerance from the server's own clock for this request).
    decode, clock = client_decode, ("client" if client_decode else None)
    if server_decode and (agreement is None
                          or abs(agreement - 1) > CLOCK_AGREEMENT_TOLERANCE):
        decode, clock = float(server_decode), "server"
    itl = (1 / decode) if decode else None
    gaps = [b.t_s - a.t_s for a, b in pairwise(chunks)]

    answer, reasoning = split.answer, split.reasoning
    a_chars, r_chars = count_chars(answer), count_chars(reasoning)
    a_bytes = len(answer.encode("utf-8"))
    total_chars = a_chars + r_chars

    details = (rec.usage or {}).get("completion_tokens_details") or {}
    if reasoning_tokens is None and details.get("reasoning_tokens") is not None:
        reasoning_tokens, reasoning_tokens_source = int(details["reasoning_tokens"]), "server"
    if not reasoning:
        reasoning_tokens, reasoning_tokens_source = 0, None
    elif reasoning_tokens is None:
        reasoning_tokens, reasoning_tokens_source = timed.reasoning_chunks, "estimate"
    answer_tokens = None
    if n_out is not None:
        answer_tokens = max(n_out - reasoning_tokens, 0)
    answer_times = [c.t_s for c in chunks if c.t_s >= (timed.t_first_answer_s or float("inf"))]
    thinking = None
    if timed.t_first_reasoning_s is not None:
        end = timed.t_first_answer_s
        if end is None:
            # A first reasoning chunk means a last one too.
            assert timed.t_last_reasoning_s is not None
            end = timed.t_last_reasoning_s
        thinking = end - chunks[0].t_s
    return SpeedMetrics(
        ttft_s=ttft,
        first_answer_char_s=(timed.t_first_answer_s - t_sent
                             if timed.t_first_answer_s is not None else None),
        e2e_s=(rec.t_done_s - t_sent) if rec.t_done_s is not None else None,
        prompt_tokens=prompt_tokens,
        output_tokens=n_out,
        output_tokens_source=source,
        prompt_tokens_per_s=(prompt_tokens / ttft) if prompt_tokens and ttft else None,
        decode_tokens_per_s=decode,
        itl_per_token_s=itl,
        itl_per_chunk_median_s=_median(gaps),
        n_chunks=len(chunks),
        answer_chars=a_chars,
        answer_graphemes=count_graphemes(answer),
        answer_bytes=a_bytes,
        reasoning_chars=r_chars,
        reasoning_share=(r_chars / total_chars) if total_chars else None,
        chars_per_s=(a_chars / window) if window and window > 0 else None,
        bytes_per_s=(a_bytes / window) if window and window > 0 else None,
        # Only meaningful when every output token is an answer token.
        chars_per_token=(a_chars / n_out) if n_out and r_chars == 0 else None,
        finish_reason=rec.finish_reason,
        length_capped=rec.finish_reason == "length",
        cached_prompt_tokens=_cached_tokens(rec),
        server_decode_tokens_per_s=server_decode,
        server_prompt_tokens_per_s=timings.get("prompt_per_second"),
        outcome=outcome(split, rec.finish_reason) if not rec.error else "error",
        reasoning_format=split.format,
        leaked_markers=split.leaked_markers,
        first_reasoning_s=(timed.t_first_reasoning_s - t_sent
                           if timed.t_first_reasoning_s is not None else None),
        send_delay_s=rec.t_written_s,
        thinking_s=thinking,
        reasoning_tokens=reasoning_tokens,
        answer_tokens=answer_tokens,
        reasoning_tokens_source=reasoning_tokens_source,
        reasoning_decode_tokens_per_s=_phase_rate(
            reasoning_tokens if reasoning else None, timed.t_first_reasoning_s,
            timed.t_last_reasoning_s),
        answer_decode_tokens_per_s=_phase_rate(
            (answer_phase_tokens if answer_phase_tokens is not None else
             timed.answer_chunks) if reasoning else None, timed.t_first_answer_s,
            answer_times[-1] if answer_times else None),
        decode_clock=clock,
        clock_agreement=agreement,
        token_attribution=attribution,
    )

# One line per metric: what `kurabe bench --explain` prints and the report's methods section
# shows. docs/metrics.md gives the full definitions; a test keeps the two in step.
METRIC_DOCS: dict[str, str] = {
    "ttft_s": "time to first token = t(first chunk carrying generated text, answer or "
              "reasoning) − t(request sent); role-only chunks do not count",
    "first_answer_char_s": "time to first answer character = t(first chunk with answer "
                           "text) − t(sent); equals TTFT unless the model reasons first",
    "e2e_s": "end-to-end latency = t(end of stream) − t(request sent)",
    "send_delay_s": "send delay = t(request sent) − t(request started): the client's own "
                    "time to build the request and connect (when it must); t(request sent), "
                    "where every latency starts, is when the client began writing the "
                    "request on its open connection",
    "prompt_tokens_per_s": "prompt tokens/s = prompt_tokens (server's usage) / TTFT; "
                           "includes HTTP and the first decode step",
    "decode_tokens_per_s": "decode tokens/s = tokens generated after the first text chunk up "
                           "to the last / (t(last text chunk) − t(first text chunk)); the tokens "
                           "are the server's running count sent with those two chunks (llama.cpp "
                           "timings_per_token; a chunk can carry several tokens), else "
                           "output_tokens − 1. When it differs from the server's own rate for "
                           "the same request by more than 10% (or cannot be computed), the "
                           "server's timings.predicted_per_second is used (see decode_clock)",
    "itl_per_token_s": "inter-token latency per token = 1 / decode tokens/s, on the same clock: "
                       "(t(last text chunk) − t(first text chunk)) / the tokens generated in "
                       "between",
    "decode_clock": "which clock decode tokens/s and inter-token latency come from: client "
                    "(chunk arrival times), or server (its own timings, used when the client's "
                    "clock could not resolve the tokens)",
    "clock_agreement": "client-clock decode rate / the server's own rate "
                       "(timings.predicted_per_second) for the same request; 1.0 = agreement",
    "itl_per_chunk_median_s": "inter-chunk latency = median gap between consecutive text chunks "
                              "(one request), then the median over requests",
    "chars_per_s": "answer characters/s = answer characters (NFKC code points, reasoning "
                   "excluded) / (t(last) − t(first)); comparable across tokenizers",
    "bytes_per_s": "answer UTF-8 bytes/s = UTF-8 bytes of the answer / (t(last) − t(first))",
    "chars_per_token": "characters per token = answer characters / output_tokens (only when "
                       "the model produced no reasoning)",
    "output_tokens": "output tokens = usage.completion_tokens from the server (one per chunk "
                     "only when the server reports no count, marked as an estimate)",
    "answer_chars": "answer characters = len(NFKC(answer)) in Unicode code points",
    "server_decode_tokens_per_s": "llama.cpp's own timings.predicted_per_second for the same "
                                  "request, stored for cross-checking",
    "server_prompt_tokens_per_s": "llama.cpp's own timings.prompt_per_second",
    "outcome": "answered | thinking_exhausted (reasoning, no answer, cut by the token limit "
               "or a reported reasoning budget; never graded) | answered_without_thinking "
               "(the template opened a think block the model never closed before stopping on "
               "its own: its text is the answer, graded) | stopped_in_thinking (reasoning, no "
               "answer, the model stopped on its own; never graded) | leaked (reasoning "
               "markers in the answer; not graded) | empty (no answer, nothing left open) | "
               "error (the request failed)",
    "first_reasoning_s": "time to the first chunk that adds reasoning text",
    "thinking_s": "seconds spent thinking = t(first answer character) − t(first token), or to "
                  "the last reasoning chunk when no answer came",
    "reasoning_tokens": "reasoning tokens: the server's count, else the model's own tokenizer "
                        "(llama.cpp /tokenize) on the reasoning text, else one per reasoning "
                        "chunk (marked estimate)",
    "answer_tokens": "answer tokens = output_tokens − reasoning_tokens",
    "reasoning_decode_tokens_per_s": "(reasoning_tokens − 1) / (t(last reasoning chunk) − "
                                     "t(first reasoning chunk))",
    "answer_decode_tokens_per_s": "(answer-phase tokens − 1) / (t(last answer chunk) − "
                                  "t(first answer chunk)), the answer re-tokenised by the model's "
                                  "tokenizer; reported when the model reasoned",
}
