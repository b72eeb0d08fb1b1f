"""TfIdfVectorizer over integer tokens against onnxruntime: n-gram lengths, skips, modes, weights."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.diagnostics import Unsupported
from frontends.onnx import load_onnx

POOL = {"ngram_counts": [0, 4, 10], "pool_int64s": [2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 3, 3, 3, 7, 8, 6],
        "ngram_indexes": [0, 1, 2, 3, 4, 5, 6, 8, 7]}        # 4 unigrams, 3 bigrams, 2 trigrams


@pytest.mark.parametrize("lengths,skip", [((1, 1), 0), ((2, 2), 0), ((1, 2), 3), ((2, 3), 2), ((1, 3), 5)])
@pytest.mark.parametrize("rank", [1, 2])
def test_tfidf_counts(check_node, rng, lengths, skip, rank):
    x = rng.choice([2, 3, 5, 6, 7, 8], (3, 12)).astype(np.int64)
    x = x if rank == 2 else x[0].astype(np.int32)
    check_node("TfIdfVectorizer", {"x": x}, 9, min_gram_length=lengths[0], max_gram_length=lengths[1],
               max_skip_count=skip, mode="TF", **POOL)


@pytest.mark.parametrize("mode", ["IDF", "TFIDF"])
@pytest.mark.parametrize("weighted", [False, True])
def test_tfidf_modes(check_node, rng, mode, weighted):
    x = rng.choice([2, 3, 5, 6, 7, 8], (2, 10)).astype(np.int32)
    weights = {"weights": list(np.linspace(0.5, 2.0, 9))} if weighted else {}
    check_node("TfIdfVectorizer", {"x": x}, 9, min_gram_length=1, max_gram_length=3, max_skip_count=1,
               mode=mode, **POOL, **weights)


def test_tfidf_string_pool_is_unsupported(make_model):
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], min_gram_length=1, max_gram_length=1,
                            max_skip_count=0, mode="TF", ngram_counts=[0], ngram_indexes=[0],
                            pool_strings=["a"])
    x = np.zeros((4,), np.int32)
    model = make_model([node], {"x": x}, ["y"], 9)
    with pytest.raises(Unsupported, match="pool_strings"):
        load_onnx(model)
