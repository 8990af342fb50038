"""Notebook 04 (embedding fine-tuning with Matryoshka loss): the from-scratch losses and small eval utilities.

    embeddings.check_pairs(train)                          # a clear error before the trainer sees bad columns
    embeddings.mnrl_loss(anchor_emb, positive_emb)         # in-batch negatives, what MultipleNegativesRankingLoss does
    embeddings.matryoshka_loss(anchor_emb, positive_emb, dims=(384, 128, 32))   # what MatryoshkaLoss adds on top

The notebook builds the model, the losses, the trainer and the InformationRetrievalEvaluator itself with
sentence-transformers; nothing here calls them for it. Shapes: B = batch size, D = the model's embedding size.
"""

import time
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict

from .data import check_format

PAIR_COLUMNS = ("anchor", "positive")
BYTES_PER_FLOAT32 = 4


# --------------------------------------------------------------------------------------------- bad input
def check_pairs(dataset: Dataset, where: str = "dataset") -> None:
    """Raise a ValueError unless `dataset` is what MultipleNegativesRankingLoss trains on: (anchor, positive) pairs.

    sentence-transformers losses read the columns *by position*, not by name: the first column is the anchor
    (the query), the second its positive (the passage), and every further column is taken as a hard negative.
    So besides missing columns (checked by helpers.check_format), a wrong order or an extra column such as an id
    trains silently on the wrong thing; this check refuses both.
    """
    needs = (f"MultipleNegativesRankingLoss (alone or inside MatryoshkaLoss) needs exactly the columns "
             f"{list(PAIR_COLUMNS)}, in that order: each anchor (a query) with the text that answers it; the other "
             f"rows' positives in the batch serve as its negatives.")
    try:
        check_format(dataset, "pairs", where=where)
    except ValueError as error:
        raise ValueError(f"{error}\n{needs}") from None
    columns = list(dataset.column_names)
    if tuple(columns[:2]) != PAIR_COLUMNS or len(columns) > 2:
        raise ValueError(
            f"{where}: columns {columns}, but {needs} The losses read columns by position (a third column would be "
            f"used as hard negatives), so select and order them first: "
            f"dataset.select_columns({list(PAIR_COLUMNS)})."
        )


# --------------------------------------------------------------------------------------------- the losses
def mnrl_loss(anchor_emb: torch.Tensor, positive_emb: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """Multiple negatives ranking loss (InfoNCE with in-batch negatives), from scratch.

    anchor_emb:   (B, d) one embedding per query
    positive_emb: (B, d) row i is the passage that answers query i; the other B-1 rows are its negatives
    scale:        multiplies the cosine similarities (1 / temperature); 20 is sentence-transformers' default
    returns:      scalar tensor, the mean over the batch of -log softmax_j(scale * cos(a_i, p_j))[i]
    """
    anchors = F.normalize(anchor_emb, p=2, dim=-1)  # cosine similarity = dot product of unit vectors
    positives = F.normalize(positive_emb, p=2, dim=-1)
    scores = scale * anchors @ positives.T  # (B, B): query i against every passage in the batch
    targets = torch.arange(scores.size(0), device=scores.device)  # the right passage sits on the diagonal
    return F.cross_entropy(scores, targets)


def matryoshka_loss(anchor_emb: torch.Tensor, positive_emb: torch.Tensor, dims: Sequence[int],
                    weights: Sequence[float] | None = None, scale: float = 20.0) -> torch.Tensor:
    """Matryoshka loss around MNRL, from scratch: the same loss on the first d coordinates, for every d, summed.

    anchor_emb, positive_emb: (B, D) full embeddings; every d in dims must be <= D
    dims:    nested prefix sizes, e.g. (384, 256, 128, 64, 32)
    weights: one per dim (default 1 each), as in MatryoshkaLoss(matryoshka_weights=...)
    returns: scalar tensor, sum_d w_d * mnrl_loss(anchor_emb[:, :d], positive_emb[:, :d])
    """
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if len(weights) != len(dims):
        raise ValueError(f"{len(dims)} dims but {len(weights)} weights; give one weight per dim.")
    too_big = [d for d in dims if d > anchor_emb.shape[-1]]
    if too_big:
        raise ValueError(f"dims {too_big} exceed the embedding size {anchor_emb.shape[-1]}.")
    # mnrl_loss normalizes, so slicing then normalizing is exactly "truncate and renormalize"
    return sum(w * mnrl_loss(anchor_emb[:, :d], positive_emb[:, :d], scale) for d, w in zip(dims, weights))


# --------------------------------------------------------------------------------------------- evaluation
def ir_inputs(queries: Dataset, corpus: Dataset) -> tuple[dict, dict, dict]:
    """The three dicts InformationRetrievalEvaluator takes, from the course format.

    queries: rows {"query", "positive_id"};  corpus: rows {"id", "text"}
    returns: (query id -> text, passage id -> text, query id -> {relevant passage ids})
    """
    check_format(queries, "ir_queries", where="queries")
    check_format(corpus, "ir_corpus", where="corpus")
    query_texts = {f"q{i}": row["query"] for i, row in enumerate(queries)}
    relevant = {f"q{i}": {row["positive_id"]} for i, row in enumerate(queries)}
    passages = dict(zip(corpus["id"], corpus["text"]))
    missing = sorted({pid for ids in relevant.values() for pid in ids} - set(passages))
    if missing:
        raise ValueError(f"queries point at passages that are not in the corpus: {missing[:5]}")
    return query_texts, passages, relevant


def metric_by_dim(results: dict, dims: Sequence[int], metric: str = "ndcg@10", name: str = "") -> dict[int, float]:
    """Pick one metric per dimension out of an InformationRetrievalEvaluator result.

    Expects score functions named "dim{d}" (one per truncation size), so keys look like
    "{name}_dim{d}_{metric}", e.g. "test_dim64_ndcg@10".
    """
    prefix = f"{name}_" if name else ""
    return {d: float(results[f"{prefix}dim{d}_{metric}"]) for d in dims}


def relative_change(before: dict, after: dict) -> dict:
    """Percent change per key: 100 * (after - before) / before."""
    return {key: 100.0 * (after[key] - before[key]) / before[key] for key in before}


def search_seconds(query_emb: torch.Tensor, corpus_emb: torch.Tensor, k: int = 10, repeats: int = 5) -> float:
    """Wall time of one exact (brute-force) search: every query scored against every passage, then top-k.

    query_emb: (Q, d), corpus_emb: (N, d), both unit-length. Returns the fastest of `repeats` runs in seconds
    (the fastest is the least disturbed by whatever else the machine is doing).
    """
    torch.topk(query_emb @ corpus_emb.T, k, dim=1)  # warm-up: the first call allocates buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scores = query_emb @ corpus_emb.T  # (Q, N): the cost grows linearly with d
        torch.topk(scores, k, dim=1)
        if query_emb.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def dims_table(dims: Sequence[int], baseline: dict, finetuned: dict, search_s: dict,
               plain_mnrl: dict | None = None, storage_docs: int = 1_000_000) -> pd.DataFrame:
    """One row per dimension: nDCG@10 before/after and % change, storage (float32) and measured search time.

    baseline, finetuned, plain_mnrl: {dim: nDCG@10};  search_s: {dim: seconds for one search}
    """
    change = relative_change(baseline, finetuned)
    full = max(dims)
    rows = {}
    for d in dims:
        row = {"baseline nDCG@10": baseline[d]}
        if plain_mnrl is not None:
            row["MNRL nDCG@10"] = plain_mnrl[d]
        row |= {
            "Matryoshka nDCG@10": finetuned[d],
            "Matryoshka vs baseline %": change[d],
            "bytes / vector": d * BYTES_PER_FLOAT32,
            f"MB per {storage_docs:,} docs": storage_docs * d * BYTES_PER_FLOAT32 / 1e6,
            "search ms": 1000 * search_s[d],
            "search speed-up": search_s[full] / search_s[d],
        }
        rows[d] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "dims"
    return table


def plot_metric_by_dim(curves: dict[str, dict[int, float]], metric: str = "nDCG@10", title: str = "", ax=None,
                       intervals: dict[str, dict[int, Sequence[float]]] | None = None):
    """One line per model: the metric against the embedding dimension (log2 axis), with a shaded 95% interval
    where `intervals` gives one ({label: {dim: (low, high)}}). Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, by_dim in curves.items():
        dims = sorted(by_dim)
        line, = ax.plot(dims, [by_dim[d] for d in dims], marker="o", label=label)
        if intervals and label in intervals:
            ax.fill_between(dims, [intervals[label][d][0] for d in dims], [intervals[label][d][1] for d in dims],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    all_dims = sorted({d for by_dim in curves.values() for d in by_dim})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_dims, [str(d) for d in all_dims])
    ax.minorticks_off()
    ax.set_xlabel("embedding dimensions kept (truncate_dim)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# --------------------------------------------------------------------------------------------- other data
def retrieval_splits_from_pairs(pairs: Dataset, n_train: int, n_test: int, seed: int = 0) -> DatasetDict:
    """Turn any (anchor, positive) pairs dataset (e.g. one from the Hub) into the course's retrieval layout.

    Pairs are shuffled and de-duplicated by passage; `n_test` passages and their queries are held out, `n_train`
    pairs are trained on. The corpus holds every kept passage, so the training passages act as distractors.
    returns: DatasetDict(train: anchor/positive, test: query/positive_id, corpus: id/text)
    """
    check_pairs(pairs, where="pairs")
    seen, unique = set(), []
    for row in pairs.shuffle(seed=seed):
        if row["positive"] not in seen:
            seen.add(row["positive"])
            unique.append(row)
        if len(unique) == n_train + n_test:
            break
    if len(unique) < n_train + n_test:
        raise ValueError(f"only {len(unique)} distinct passages; asked for {n_train} train + {n_test} test.")
    corpus = [{"id": f"d{i}", "text": row["positive"]} for i, row in enumerate(unique)]
    test = [{"query": row["anchor"], "positive_id": f"d{i}"} for i, row in enumerate(unique[:n_test])]
    train = [{"anchor": row["anchor"], "positive": row["positive"]} for row in unique[n_test:]]
    return DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test),
                        "corpus": Dataset.from_list(corpus)})


def ndcg_per_query(query_emb: torch.Tensor, corpus_emb: torch.Tensor, positive: torch.Tensor, dims: Sequence[int],
                   k: int = 10) -> dict[int, torch.Tensor]:
    """nDCG@k of every query, for each truncation size, with one relevant passage per query.

    query_emb: (Q, D), corpus_emb: (N, D), positive: (Q,) index of each query's relevant passage in corpus_emb.
    Returns {d: (Q,)}: 1 / log2(1 + rank) where the passage ranks in the top k (rank 1 = best), else 0, ranking by
    the cosine of the first d numbers. Rank = 1 + the passages scored strictly higher. The mean over queries is
    what InformationRetrievalEvaluator reports; per query it is what a bootstrap over queries resamples.
    """
    result = {}
    for d in dims:
        scores = F.normalize(query_emb[:, :d].float(), dim=-1) @ F.normalize(corpus_emb[:, :d].float(), dim=-1).T
        right = scores.gather(1, positive.view(-1, 1))  # (Q, 1): the relevant passage's score
        rank = (scores > right).sum(1) + 1  # (Q,)
        result[d] = torch.where(rank <= k, 1.0 / torch.log2(1.0 + rank.double()), torch.zeros((), dtype=torch.float64))
    return result
