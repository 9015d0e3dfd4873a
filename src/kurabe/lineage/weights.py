"""Weight similarity, tensor by tensor, from a sample of rows.

Fine-tuning, continued pre-training and re-quantization move weights a little; two models
trained independently, even of the same shape, have near-orthogonal weights. So for each
tensor both models hold with the same shape, kurabe reads a sample of rows from each file
(only those rows' bytes), dequantizes them with gguf-py, and measures how well A's vectors
are matched by B's, against what independent weights would give:

* **rows in place**: the same rows of both (``|cos|`` of row i of A with row i of B);
* **rows searched**: when the rows in place do not match, each sampled row of A against a
  set of B's rows: every row when the tensor is small, else the same offsets inside every
  head (``attn_q``/``attn_k``/``attn_v``: heads are blocks of ``head_dim`` rows) or every
  expert (``*_exps``: the experts' rows are flattened, expert ``e`` holding rows
  ``e*ne[1] ...``), so a copy whose heads or experts were permuted is still found;
* **columns searched**: for the matrices whose *input* axis a head or neuron permutation
  moves (``attn_output``, ``ffn_down``), the columns of the same sampled rows of both, each
  sampled column of A against every column of B.

The statistic is the median over A's sampled vectors of their best ``|cos|`` (the absolute
value, so a row whose sign was flipped with its partner's still matches). Its **null** is
the same statistic with B's coordinates shuffled by one fixed random permutation: what
vectors with B's values but no correspondence to A's score (for random vectors of
dimension d, about 0.67/sqrt(d) in place and sqrt(2 ln n / d) for the best of n). A
tensor's **score** is ``(similarity - null) / (1 - null)``, clipped to [0, 1]: 0 is chance,
1 is identical. The best method's score counts. A tensor whose null is above
:data:`MAX_NULL` (its vectors all point one way, so anything matches) is not informative.

A layer's score is the median of its tensors' scores; it **matches** at
:data:`MATCH_SCORE` or more. Vectors (norms, biases) are not scored: they are few numbers,
often near constant, and a twin's are exactly 1.

The token embedding and the output layer are compared row by row when the vocabularies are
the same, and by token string (the rows of the tokens both vocabularies hold) when they
differ but the width is the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kurabe.lineage.files import ModelFile, TensorRef, can_dequantize

# A tensor (or layer) whose score reaches this matches. Independent weights scored at most
# 0.02 per layer and 0.06 per tensor in the tests and the benchmark; a copy with noise as
# large as the weights themselves added still scores about 0.7 (cos 1/sqrt(2)); noise four
# times the weights' size, about 0.2.
MATCH_SCORE = 0.2
# When nine in ten rows score this high in place, nothing was reordered: no search.
CLEAR_SCORE = 0.8
# Nulls above this leave no room to tell a match from chance: the tensor is not scored.
MAX_NULL = 0.8
# Most floats held at once for one tensor of one file (64 MiB), whatever the sample asks.
MAX_FLOATS = 1 << 24

EMBEDDINGS = ("token_embd.weight", "output.weight")
_LAYER = re.compile(r"^blk\.(\d+)\.")
# 2-D matrices whose input axis (columns) a permutation of heads or hidden units moves.
_COLUMN_KINDS = {"attn_output": "heads", "ffn_down": "hidden units",
                 "ffn_down_shexp": "hidden units"}

ProgressHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Sample:
    """How much of each tensor is read (see docs/lineage.md, Sampling).

    ``rows``: vectors of A compared per tensor; ``column_rows``: rows read for the column
    search (the length of its column vectors); ``candidates``: most rows of B searched per
    tensor; ``max_layers``: layers compared, evenly spaced (None: all); ``seed``: the
    random choice of rows, columns and shuffles."""

    rows: int = 64
    column_rows: int = 256
    candidates: int = 1024
    max_layers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("rows", "column_rows", "candidates"):
            if int(getattr(self, key)) < 2:
                raise ValueError(f"sample {key} must be at least 2")
        if self.max_layers is not None and self.max_layers < 1:
            raise ValueError("sample max_layers must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SAMPLE = Sample()
# What a shootout uses for its report's lineage row: a few seconds on multi-GB files.
FAST_SAMPLE = Sample(rows=32, column_rows=128, candidates=256, max_layers=6)


@dataclass
class TensorScore:
    name: str
    layer: int | None
    shape: list[Any]  # GGML order; [shape in A, shape in B] when they differ
    types: list[str]  # storage types in A and B
    method: str | None  # the method whose score counts
    similarity: float | None  # median best |cos| of that method
    null: float | None  # the same statistic against shuffled coordinates
    score: float | None  # (similarity - null) / (1 - null), clipped to [0, 1]
    vectors: int  # vectors of A compared by that method
    matched: bool
    informative: bool
    tried: dict[str, float] = field(default_factory=dict)  # method -> score
    spectrum_gap: float | None = None  # singular values of the sampled rows: 0 = same
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerScore:
    layer: int
    score: float | None  # median score of its informative tensors
    similarity: float | None
    null: float | None
    matched: bool
    tensors: list[TensorScore]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "score": self.score, "similarity": self.similarity,
                "null": self.null, "matched": self.matched,
                "tensors": [t.to_dict() for t in self.tensors]}


@dataclass
class WeightsResult:
    layers: list[LayerScore]
    other: list[TensorScore]  # tensors outside the layers (embedding, output)
    skipped: list[dict[str, str]]  # {name, why}
    layers_in_model: int  # layers both models hold tensors of the same shape in
    bytes_read: dict[str, int]
    bytes_total: dict[str, int]
    spectrum_gap: float | None

    @property
    def compared(self) -> list[LayerScore]:
        return [layer for layer in self.layers if layer.score is not None]

    @property
    def matched(self) -> list[LayerScore]:
        return [layer for layer in self.compared if layer.matched]

    def median(self, key: str) -> float | None:
        values = [getattr(layer, key) for layer in self.compared]
        return _median([v for v in values if v is not None])

    def to_dict(self) -> dict[str, Any]:
        return {"layers_in_model": self.layers_in_model,
                "layers_compared": len(self.compared), "layers_matched": len(self.matched),
                "median_score": self.median("score"),
                "median_similarity": self.median("similarity"),
                "median_null": self.median("null"), "spectrum_gap": self.spectrum_gap,
                "other_tensors": [t.to_dict() for t in self.other],
                "skipped": self.skipped, "bytes_read": self.bytes_read,
                "bytes_total": self.bytes_total}


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def layer_of(name: str) -> int | None:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def _kind(name: str) -> str:
    base = name.removesuffix(".weight").removesuffix(".bias")
    return base.split(".")[-1]


# --------------------------------------------------------------------------------------------
# The statistics
# --------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(x, axis=1)
    ok = np.isfinite(norms) & (norms > 0)
    return x / np.where(ok, norms, 1.0)[:, None], ok


@dataclass
class _Stat:
    similarity: float
    null: float
    vectors: int
    low: float = 0.0  # the 10th percentile of the vectors' best |cos|

    @property
    def low_score(self) -> float:
        """The score of the 10th percentile vector (the median's is :attr:`score`)."""
        return float(np.clip((self.low - self.null) / (1.0 - self.null), 0.0, 1.0))

    @property
    def all_match(self) -> bool:
        """Nearly every vector matches (not only the median one): nothing was moved."""
        return self.informative and self.low_score >= CLEAR_SCORE

    @property
    def informative(self) -> bool:
        return self.null < MAX_NULL

    @property
    def score(self) -> float:
        return float(np.clip((self.similarity - self.null) / (1.0 - self.null), 0.0, 1.0))


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> _Stat | None:
    """Row i of ``a`` against row i of ``b``."""
    ua, oka = _unit(a)
    ub, okb = _unit(b)
    ok = oka & okb
    if ok.sum() < 2:
        return None
    ua, ub = ua[ok], ub[ok]
    sims = np.abs(np.einsum("ij,ij->i", ua, ub))
    shuffled = ub[:, rng.permutation(ub.shape[1])]
    nulls = np.abs(np.einsum("ij,ij->i", ua, shuffled))
    return _Stat(float(np.median(sims)), float(np.median(nulls)), int(ok.sum()),
                 float(np.percentile(sims, 10)))


def best_match(queries: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
               ) -> _Stat | None:
    """Each row of ``queries`` against every row of ``candidates``: its best |cos|."""
    uq, okq = _unit(queries)
    uc, okc = _unit(candidates)
    uq, uc = uq[okq], uc[okc]
    if len(uq) < 2 or len(uc) < 1:
        return None
    sims = np.abs(uq @ uc.T).max(axis=1)
    # the queries' coordinates shuffled: the same statistic as shuffling every candidate's
    shuffled = uq[:, rng.permutation(uq.shape[1])]
    nulls = np.abs(shuffled @ uc.T).max(axis=1)
    return _Stat(float(np.median(sims)), float(np.median(nulls)), len(uq),
                 float(np.percentile(sims, 10)))


def _singular_values(x: np.ndarray) -> np.ndarray:
    """Singular values, largest first, from the smaller Gram matrix (a few rows of a wide
    matrix: far cheaper than an SVD)."""
    x = x.astype(np.float64)
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None))[::-1]


def spectrum_gap(a: np.ndarray, b: np.ndarray) -> float | None:
    """Distance between the normalised singular values of two blocks of rows (0: the same
    spectrum; at most sqrt(2)). Invariant to any permutation of the columns, and of the
    rows within each block."""
    if min(a.shape) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    sa, sb = _singular_values(a), _singular_values(b)
    na, nb = np.linalg.norm(sa), np.linalg.norm(sb)
    if na == 0 or nb == 0:
        return None
    return round(float(np.linalg.norm(sa / na - sb / nb)), 4)


# --------------------------------------------------------------------------------------------
# One tensor
# --------------------------------------------------------------------------------------------


def _heads(model: ModelFile, key: str, layer: int | None) -> int | None:
    value = model.hparam(key)
    if isinstance(value, list) and layer is not None and 0 <= layer < len(value):
        value = value[layer]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def row_groups(name: str, t: TensorRef, model: ModelFile) -> tuple[int, str] | None:
    """Rows per permutable unit of a tensor and the unit's name: ``head_dim`` rows per
    head of Q, K and V; ``ne[1]`` rows per expert of a 3-D ``*_exps`` tensor."""
    if len(t.shape) == 3 and t.shape[2] > 1:
        return int(t.shape[1]), "experts"
    kind, layer = _kind(name), layer_of(name)
    if kind == "ffn_gate_inp":  # the router: one row per expert
        return 1, "experts"
    heads = {"attn_q": _heads(model, "attention.head_count", layer),
             "attn_k": _heads(model, "attention.head_count_kv", layer),
             "attn_v": _heads(model, "attention.head_count_kv", layer)}.get(kind)
    if kind == "attn_k" or kind == "attn_v":
        heads = heads or _heads(model, "attention.head_count", layer)
    if heads and heads > 1 and t.n_rows % heads == 0:
        return t.n_rows // heads, "heads"
    return None


RUN = 8  # rows are sampled in runs of this many consecutive rows: one read each


def sample_rows(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """``m`` of ``n`` row indices (all of them when ``n <= m``), sorted, taken as runs of
    :data:`RUN` consecutive rows at random places, so a cold file is read in a few requests
    per tensor rather than one per row."""
    if n <= m:
        return np.arange(n)
    blocks = n // RUN
    runs = -(-m // RUN)
    if blocks < runs or m < RUN:
        return np.sort(rng.choice(n, m, replace=False))
    starts = np.sort(rng.choice(blocks, runs, replace=False)) * RUN
    return (starts[:, None] + np.arange(RUN)[None, :]).ravel()[:m]


class _Compare:
    def __init__(self, a: ModelFile, b: ModelFile, sample: Sample) -> None:
        self.a, self.b, self.sample = a, b, sample

    def rng(self, name: str) -> np.random.Generator:
        import zlib

        return np.random.default_rng([self.sample.seed, zlib.crc32(name.encode())])

    def cap(self, d: int) -> int:
        return max(2, min(self.sample.candidates, MAX_FLOATS // max(1, d)))

    def tensor(self, name: str) -> TensorScore:
        ta, tb = self.a.tensors[name], self.b.tensors[name]
        rng = self.rng(name)
        rows, d = ta.n_rows, ta.row_len
        index = sample_rows(rng, rows, self.sample.rows)
        xa, xb = self.a.rows(name, index), self.b.rows(name, index)
        stats: dict[str, _Stat] = {}
        stat = paired(xa, xb, rng)
        if stat is not None:
            stats["rows in place"] = stat
        gap = spectrum_gap(xa, xb)
        if stat is None or not stat.all_match:
            groups = row_groups(name, ta, self.a)
            cap = self.cap(d)
            if rows <= cap and name not in EMBEDDINGS:
                found = best_match(xa, self.b.rows(name, np.arange(rows)), rng)
                across = f" across {groups[1]}" if groups is not None else ""
                if found is not None:
                    stats[f"rows searched{across} (all {rows})"] = found
            elif groups is not None:
                g, unit = groups
                units = rows // g
                k = max(1, min(g, cap // units))
                # the same k consecutive offsets inside every head or expert
                first = int(rng.integers(0, g - k + 1))
                pool = (np.arange(units)[:, None] * g + first + np.arange(k)[None, :]).ravel()
                queries = pool[sample_rows(rng, len(pool), self.sample.rows)]
                found = best_match(self.a.rows(name, queries), self.b.rows(name, pool), rng)
                if found is not None:
                    stats[f"rows searched across {unit}"] = found
            unit_name = _COLUMN_KINDS.get(_kind(name))
            if unit_name is not None and len(ta.shape) == 2:
                r2 = min(rows, max(self.sample.column_rows, 2), MAX_FLOATS // max(1, d))
                index2 = sample_rows(rng, rows, r2)
                ya, yb = self.a.rows(name, index2), self.b.rows(name, index2)
                cols = np.sort(rng.choice(d, min(d, self.sample.rows), replace=False))
                found = best_match(ya[:, cols].T, yb.T, rng)
                if found is not None:
                    stats[f"columns searched across {unit_name}"] = found
        return self._score(name, ta, tb, stats, gap)

    def tokens(self, name: str, ids_a: list[int], ids_b: list[int]) -> TensorScore:
        """An embedding-like tensor of two vocabularies: the rows of shared tokens."""
        ta, tb = self.a.tensors[name], self.b.tensors[name]
        rng = self.rng(name)
        pick = sample_rows(rng, len(ids_a), self.sample.rows)
        ia, ib = np.asarray(ids_a)[pick], np.asarray(ids_b)[pick]
        xa, xb = self.a.rows(name, ia), self.b.rows(name, ib)
        stats = {}
        stat = paired(xa, xb, rng)
        if stat is not None:
            stats["rows by token"] = stat
        return self._score(name, ta, tb, stats, None,
                           note=f"{len(ids_a):,} tokens in both vocabularies")

    def _score(self, name: str, ta: TensorRef, tb: TensorRef, stats: dict[str, _Stat],
               gap: float | None, note: str | None = None) -> TensorScore:
        shape: list[Any] = (list(ta.shape) if ta.shape == tb.shape
                            else [list(ta.shape), list(tb.shape)])
        usable = {k: s for k, s in stats.items() if s.informative}
        tried = {k: round(s.score, 4) for k, s in stats.items()}
        if not usable:
            why = ("its vectors all point one way (null above "
                   f"{MAX_NULL})" if stats else "no vectors with a length to compare")
            return TensorScore(name, layer_of(name), shape, [ta.type_name, tb.type_name],
                               None, None, None, None, 0, False, False, tried, gap,
                               note=f"not scored: {why}")
        # the best score; of equal ones, the method that matches more of the vectors
        method = max(usable, key=lambda k: (round(usable[k].score, 4), usable[k].low_score))
        best = usable[method]
        return TensorScore(name, layer_of(name), shape, [ta.type_name, tb.type_name], method,
                           round(best.similarity, 4), round(best.null, 4),
                           round(best.score, 4), best.vectors, best.score >= MATCH_SCORE,
                           True, tried, gap, note)


# --------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------


def _comparable(a: ModelFile, b: ModelFile, token_ids: tuple[list[int], list[int]] | None
                ) -> tuple[list[str], dict[str, str], list[dict[str, str]]]:
    """Tensors to compare (same name and shape, a matrix, types gguf-py dequantizes), the
    ones compared by token, and the ones left out with why."""
    same, by_token, skipped = [], {}, []
    for name in sorted(set(a.tensors) & set(b.tensors), key=_order):
        ta, tb = a.tensors[name], b.tensors[name]
        if ta.n_rows < 2 or ta.row_len < 2:
            continue  # a vector (norm, bias): not scored
        if not (can_dequantize(ta.ggml_type) and can_dequantize(tb.ggml_type)):
            skipped.append({"name": name, "why": f"gguf-py cannot dequantize "
                            f"{ta.type_name if not can_dequantize(ta.ggml_type) else tb.type_name}"})
            continue
        if ta.shape == tb.shape:
            if name in EMBEDDINGS and token_ids is not None and \
                    len(token_ids[0]) >= 2:
                by_token[name] = "tokens"
            same.append(name)
        elif name in EMBEDDINGS and ta.row_len == tb.row_len and token_ids is not None \
                and len(token_ids[0]) >= 2:
            by_token[name] = "tokens"
            same.append(name)
        else:
            skipped.append({"name": name, "why": f"shapes differ ({'x'.join(map(str, ta.shape))}"
                            f" vs {'x'.join(map(str, tb.shape))})"})
    return same, by_token, skipped


def _order(name: str) -> tuple[int, str]:
    layer = layer_of(name)
    return (-1 if layer is None else layer, name)


def compare_weights(a: ModelFile, b: ModelFile, sample: Sample = DEFAULT_SAMPLE, *,
                    token_ids: tuple[list[int], list[int]] | None = None,
                    progress: ProgressHook | None = None) -> WeightsResult:
    """Score every comparable tensor (see the module text). ``token_ids``: the ids of the
    tokens both vocabularies hold, in A and in B, when the vocabularies differ (None when
    they are the same or unknown)."""
    names, by_token, skipped = _comparable(a, b, token_ids)
    layers_all = sorted({layer for n in names if (layer := layer_of(n)) is not None})
    chosen = set(layers_all)
    if sample.max_layers is not None and len(layers_all) > sample.max_layers:
        picks = np.unique(np.linspace(0, len(layers_all) - 1, sample.max_layers).round())
        chosen = {layers_all[int(i)] for i in picks}
    todo = [n for n in names if layer_of(n) is None or layer_of(n) in chosen]
    compare = _Compare(a, b, sample)
    per_layer: dict[int, list[TensorScore]] = {}
    other: list[TensorScore] = []
    start_a, start_b = a.bytes_read, b.bytes_read
    from threadpoolctl import threadpool_limits

    # many small products: one BLAS thread is faster, and far faster on a busy machine
    with threadpool_limits(limits=1, user_api="blas"):
        for i, name in enumerate(todo):
            if progress is not None:
                progress(f"comparing {name}", i, len(todo))
            if name in by_token and token_ids is not None:
                score = compare.tokens(name, *token_ids)
            else:
                score = compare.tensor(name)
            if score.layer is None:
                other.append(score)
            else:
                per_layer.setdefault(score.layer, []).append(score)
    if progress is not None:
        progress("compared", len(todo), len(todo))
    layers = []
    for layer in sorted(per_layer):
        scored = [t for t in per_layer[layer] if t.informative and t.score is not None]
        med = _median([t.score for t in scored if t.score is not None])
        layers.append(LayerScore(
            layer, med, _median([t.similarity for t in scored if t.similarity is not None]),
            _median([t.null for t in scored if t.null is not None]),
            med is not None and med >= MATCH_SCORE, per_layer[layer]))
    gaps = [t.spectrum_gap for ls in layers for t in ls.tensors if t.spectrum_gap is not None]
    return WeightsResult(
        layers, other, skipped, len(layers_all),
        {"a": a.bytes_read - start_a, "b": b.bytes_read - start_b},
        {"a": sum(t.nbytes for t in a.tensors.values()),
         "b": sum(t.nbytes for t in b.tensors.values())}, _median(gaps))
