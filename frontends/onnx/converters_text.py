"""Converters for ONNX text ops over integer tokens: TfIdfVectorizer, its n-gram counts computed as
comparisons of gathered token windows against the constant n-gram pool."""
from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import indexing, reduce, shape
from compiler.types import DType
from frontends.onnx.context import ConvertContext, Operand


def _pool_ngrams(ctx: ConvertContext) -> list[tuple[int, tuple[int, ...]]]:
    """(output index, tokens) of each pool n-gram counted: pool_int64s holds the 1-grams from
    ngram_counts[0], the 2-grams from ngram_counts[1], ...; the i-th n-gram overall goes to output
    ngram_indexes[i]; only lengths within [min_gram_length, max_gram_length] are counted."""
    pool = ctx.attr("pool_int64s")
    if pool is None:
        raise ctx.unsupported("a string pool (pool_strings) is not supported: the IR has no strings")
    lo, hi = int(ctx.attr("min_gram_length")), int(ctx.attr("max_gram_length"))
    starts = [int(c) for c in ctx.attr("ngram_counts")] + [len(pool)]
    indexes = [int(i) for i in ctx.attr("ngram_indexes")]
    grams, n = [], 0
    for size, (begin, end) in enumerate(pairwise(starts), 1):
        for at in range(begin, begin + (end - begin) // size * size, size):
            if lo <= size <= hi:
                grams.append((indexes[n], tuple(int(t) for t in pool[at:at + size])))
            n += 1
    return grams


def _convert_tfidf_vectorizer(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Count each pool n-gram in each row: an n-gram of n tokens with skip distance d (1 ..
    max_skip_count + 1; 1-grams only at d = 1) matches at start s when x[s + t * d] is its token t for
    every t < n, all inside the row. The windows x[s + t * d] are one gather (d, s, t); the matches
    are compared, reduced over t, masked where they do not fit, summed over (d, s) and added into
    their outputs. mode TF gives the counts, IDF weights[i] (or 1) where the count is > 0, TFIDF
    counts * weights[i]."""
    x = ctx.input(0)
    if ctx.np_dtype(x).kind not in "iu" or ctx.rank(x) not in (1, 2):
        raise ctx.unsupported(f"input of {ctx.np_dtype(x)} and rank {ctx.rank(x)} (integer tokens, "
                              "rank 1 or 2, are supported)")
    rows = x if ctx.rank(x) == 2 else ctx.emit(shape.reshape, [x], shape=(1, ctx.shape(x)[0]))
    batch, length = ctx.shape(rows)
    grams = _pool_ngrams(ctx)
    out_size = max(int(i) for i in ctx.attr("ngram_indexes")) + 1
    longest, skips = max((len(g) for _, g in grams), default=1), int(ctx.attr("max_skip_count", 0)) + 1
    sizes = np.array([len(g) for _, g in grams])
    tokens = np.array([g + (0,) * (longest - len(g)) for _, g in grams], ctx.np_dtype(x))
    tokens = tokens.reshape(-1, 1, 1, longest)
    dist, start, t = np.arange(1, skips + 1)[:, None, None], np.arange(length)[:, None], np.arange(longest)
    where = np.minimum(start + t * dist, length - 1)                                  # (d, s, t)
    last = start[None, :, 0] + (sizes[:, None, None] - 1) * dist[None, :, :, 0]       # (gram, d, s)
    fits = (last < length) & ((sizes[:, None, None] > 1) | (dist[None, :, :, 0] == 1))
    windows = ctx.emit(shape.reshape, [ctx.emit(shape.gather, [rows, where], axis=1)],
                       shape=(batch, 1, skips, length, longest))
    beyond = (t >= sizes[:, None]).reshape(-1, 1, 1, longest)                        # t past the n-gram
    match = ctx.emit(ew.logical_or, [ctx.emit(ew.equal, [windows, tokens]), beyond])
    found = ctx.emit(ew.logical_and, [ctx.emit(reduce.reduce_min, [match], axes=(4,), keepdims=False), fits])
    found = ctx.emit(ew.cast, [found], to=DType.F32)
    counts = ctx.emit(reduce.reduce_sum, [found], axes=(2, 3), keepdims=False)
    at = np.tile(np.array([i for i, _ in grams], np.int64), (batch, 1))
    y = ctx.emit(indexing.scatter_elements, [np.zeros((batch, out_size), np.float32), at, counts],
                 axis=1, reduction="add")
    y = _weighted(ctx, y, out_size)
    return y if ctx.rank(x) == 2 else ctx.emit(shape.reshape, [y], shape=(out_size,))


def _weighted(ctx: ConvertContext, counts: Operand, out_size: int) -> Operand:
    """The counts as mode asks: TF as they are, IDF weights (or 1) where > 0, TFIDF times weights."""
    mode = ctx.attr("mode")
    weights = ctx.attr("weights")
    w = np.ones(out_size, np.float32) if weights is None else np.asarray(weights, np.float32)
    if mode == "TF" or (mode == "TFIDF" and weights is None):
        return counts
    if mode == "TFIDF":
        return ctx.emit(ew.mul, [counts, w])
    if mode == "IDF":
        zero = np.zeros((), np.float32)
        return ctx.emit(ew.where, [ctx.emit(ew.greater, [counts, zero]), w, zero])
    raise ctx.invalid(f"mode {mode!r} (expected TF, IDF or TFIDF)")


CONVERTERS: dict[str, Callable] = {"TfIdfVectorizer": _convert_tfidf_vectorizer}
