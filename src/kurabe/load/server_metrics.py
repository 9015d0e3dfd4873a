"""The engine's own counters: its Prometheus metrics endpoint, scraped before and after
each level (llama.cpp started with ``--metrics``, vLLM, SGLang all serve ``/metrics``).

Samples are keyed by their name as the engine exposes it (``llamacpp:tokens_predicted_total``),
summed across label sets. An endpoint without metrics (404, or a body that is not
Prometheus text) gives None, never an error: the cross-check is then simply absent.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kurabe.records import JSON

SCRAPE_TIMEOUT_S = 5.0


def parse(text: str) -> dict[str, float] | None:
    """Prometheus text as {sample name: value summed over label sets}; None: not
    Prometheus text, or no samples."""
    samples: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name] = samples.get(sample.name, 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return samples or None


async def scrape(server_root: str, *, api_key: str | None = None,
                 http: httpx.AsyncClient | None = None) -> JSON | None:
    """``{"url", "scraped_at_unix_s", "samples"}`` from ``server_root``/metrics, or None."""
    url = f"{server_root.rstrip('/')}/metrics"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    own = http is None
    client = http or httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S)
    try:
        resp = await client.get(url, headers=headers, timeout=SCRAPE_TIMEOUT_S)
        if resp.status_code != 200:
            return None
        samples = parse(resp.text)
    except (httpx.HTTPError, OSError, UnicodeDecodeError):
        return None
    finally:
        if own:
            await client.aclose()
    if samples is None:
        return None
    return {"url": url, "scraped_at_unix_s": time.time(), "samples": samples}


async def scrape_all(server_roots: list[str], *, api_key: str | None = None) -> JSON | None:
    """One scrape of every replica: samples summed over replicas (``urls`` lists them);
    None when none of them has metrics."""
    parts = [s for s in [await scrape(r, api_key=api_key) for r in server_roots]
             if s is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    total: dict[str, float] = {}
    for part in parts:
        for name, value in part["samples"].items():
            total[name] = total.get(name, 0.0) + value
    return {"url": parts[0]["url"], "urls": [p["url"] for p in parts],
            "scraped_at_unix_s": parts[-1]["scraped_at_unix_s"], "samples": total}
