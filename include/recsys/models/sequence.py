"""LSTM next-item recommender: reads each user's recent (item, event type) sequence and scores what comes next.

Trained with sampled softmax over shared uniform negatives, so a training step costs the same for a 10k or a
1M item catalog; inference scores the full catalog from the LSTM state after the user's last event.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recsys.constants import EVENT_TYPES, ITEM_COL, RANK_COL, SCORE_COL, USER_COL

logger = logging.getLogger(__name__)

#: Columns of the ``sequences`` input besides ``user_id``: chronological lists, oldest first.
SEQUENCE_ITEMS_COL = "product_ids"
SEQUENCE_EVENTS_COL = "event_types"

#: The validation metric's cut-off; it is part of the history keys, so it is fixed rather than a parameter.
VALIDATION_K = 10

#: Index 0 of both the item and the event vocabulary is padding.
PADDING_INDEX = 0
EVENT_INDEX = {event: index for index, event in enumerate(EVENT_TYPES, start=1)}

#: Upper bound on the floats of one (users x catalog) score matrix at inference (~128 MB in float32),
#: so that scoring a million users against a large catalog never materialises everything at once.
_MAX_SCORE_CELLS = 2**25

_FORMAT_VERSION = 1
_PARAMS_FILE = "params.json"
_WEIGHTS_FILE = "network.pt"
_VOCABULARY_FILE = "vocabulary.npz"
_USERS_FILE = "users.npz"

#: Log a progress line inside an epoch at most this often, so long epochs are visibly alive.
_PROGRESS_LOG_SECONDS = 30.0


#: Optimiser steps an epoch should take at least (see :func:`batch_size_for`).
MIN_STEPS_PER_EPOCH = 20


def batch_size_for(n_sequences: int, largest: int = 64, smallest: int = 32) -> int:
    """A batch size that gives at least :data:`MIN_STEPS_PER_EPOCH` steps an epoch, within [smallest, largest].

    Why: an epoch is one pass over the users, so with few users a fixed batch of 256 leaves the LSTM
    a handful of steps an epoch and early stopping ends it near its popularity prior. On MovieLens
    (610 users, 3 steps an epoch at 256) validation NDCG@10 went from 0.038 to 0.070 with batches of 32.
    Large data gets batches of 64 too: at 1M events (11,699 users, 512,753 positions, 200 steps a user at
    most) the early-stopped fit's validation NDCG@10 was 0.1080 / 0.1084 with 64 against 0.1035 / 0.1038
    with 256 (seeds 42 / 7, best epochs 50-57 of 60; on 2 threads 60 epochs took 155-162 s with 64 and
    158 s with 256 (seed 7): throughput per position about the same), and 64 reached 256's best by about
    epoch 31.
    """
    if isinstance(n_sequences, bool) or not isinstance(n_sequences, (int, np.integer)) or n_sequences < 0:
        raise ValueError(f"n_sequences must be an integer >= 0, got {n_sequences!r}")
    return int(min(largest, max(smallest, n_sequences // MIN_STEPS_PER_EPOCH)))


@dataclass(frozen=True)
class SequenceParams:
    """Hyper-parameters of :class:`SequenceRecommender`."""

    embedding_dim: int = 64
    hidden_dim: int = 64
    max_len: int = 50  # last N items of each user's sequence are used as input
    # Up to 60 epochs with patience 15 and dropout 0.3: with 15 epochs / patience 3 / dropout 0.1 the
    # model stopped while still improving on the demo data and, on MovieLens (21 validation users, a
    # noisy NDCG curve), after 5 epochs at chance-level loss. On MovieLens's 610 validation users the
    # curve then plateaus at about 0.043 from epoch 21 to 30 before climbing to 0.064-0.070; patience 10
    # stopped on the plateau or not, depending on the draw of the dropout masks. Chosen on the
    # validation slices only.
    epochs: int = 60
    batch_size: int = 64  # the pipeline sets it per dataset with batch_size_for (at most 64)
    learning_rate: float = 2e-3
    n_negatives: int = 100  # sampled negatives per step, shared by every position of the batch
    dropout: float = 0.3
    patience: int = 15  # epochs without a better validation NDCG@10 before stopping
    #: start the output bias at each item's log frequency as a next item, so the network starts from
    #: popularity and learns the sequence's deviations from it (instead of spending epochs finding it).
    popularity_prior: bool = True
    seed: int = 42
    num_threads: int | None = None  # None -> every core this process may run on

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_dim", "max_len", "epochs", "batch_size", "n_negatives", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SequenceParams.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SequenceParams.seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"SequenceParams.learning_rate must be > 0, got {self.learning_rate!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"SequenceParams.dropout must be in [0, 1), got {self.dropout!r}")
        if self.num_threads is not None and (
            isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise ValueError(f"SequenceParams.num_threads must be None or an integer >= 1, got {self.num_threads!r}")


class MaskDropout(nn.Module):
    """Inverted dropout, as :class:`torch.nn.Dropout`, with the mask drawn as ``rand >= p``.

    Why: on the CPU ``nn.Dropout`` draws its mask with ``bernoulli_``, which cost as much as a third of
    the LSTM's training step here (forward and backward of one (256, 40, 128) batch: 12.3 ms for
    ``nn.Dropout``, 3.7 ms for this, 1.7 ms for no dropout at all; torch 2.13, one thread). Same
    expectation (kept values scaled by 1 / (1 - p)), same ``train()``/``eval()`` switch, reproducible
    under ``torch.manual_seed``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"MaskDropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LSTMNextItemNetwork(nn.Module):
    """Embeds (item, event type) pairs, runs an LSTM and scores items by dot product with output embeddings.

    Item tables use sparse gradients: a step only touches the rows of the batch's items and sampled
    negatives, which keeps the optimiser's cost independent of the catalog size.
    """

    def __init__(self, n_items: int, params: SequenceParams) -> None:
        super().__init__()
        self.n_items = n_items
        # +1 everywhere for the padding row at index 0.
        self.item_embedding = nn.Embedding(n_items + 1, params.embedding_dim, padding_idx=PADDING_INDEX, sparse=True)
        # Event type is concatenated rather than added so "purchase of X" and "view of X" never collide.
        self.event_embedding = nn.Embedding(len(EVENT_TYPES) + 1, params.embedding_dim, padding_idx=PADDING_INDEX)
        self.input_dropout = MaskDropout(params.dropout)
        self.lstm = nn.LSTM(2 * params.embedding_dim, params.hidden_dim, batch_first=True)
        self.output_dropout = MaskDropout(params.dropout)
        self.output_embedding = nn.Embedding(n_items + 1, params.hidden_dim, sparse=True)
        self.output_bias = nn.Embedding(n_items + 1, 1, sparse=True)
        # Std 1/sqrt(dim) keeps initial dot products (logits) of order one; the default N(0, 1) would
        # start the softmax saturated.
        for table in (self.item_embedding, self.event_embedding, self.output_embedding):
            nn.init.normal_(table.weight, std=table.embedding_dim**-0.5)
        nn.init.zeros_(self.output_bias.weight)
        with torch.no_grad():
            self.item_embedding.weight[PADDING_INDEX].zero_()
            self.event_embedding.weight[PADDING_INDEX].zero_()

    def encode(self, items: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """LSTM outputs (batch, width, hidden) for right-padded (batch, width) item and event indices.

        The LSTM is causal, so trailing padding never changes the outputs at real positions.
        """
        inputs = torch.cat([self.item_embedding(items), self.event_embedding(events)], dim=-1)
        outputs, _ = self.lstm(self.input_dropout(inputs))
        return self.output_dropout(outputs)

    def final_state(self, items: torch.Tensor, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The LSTM output after each sequence's last real event: the user's state, (batch, hidden)."""
        outputs = self.encode(items, events)
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]

    def forward(self, items: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """Scores (batch, n_items + 1) of the next item after right-padded item/event index sequences.

        This is what the MLflow-logged model serves; padding (index 0) marks the end of each row.
        """
        lengths = (items != PADDING_INDEX).sum(dim=1).clamp(min=1)
        return self.score_all(self.final_state(items, events, lengths))

    def score_items(self, states: torch.Tensor, item_indices: torch.Tensor) -> torch.Tensor:
        """Scores (rows, len(item_indices)) of the given items for each state row."""
        weights = self.output_embedding(item_indices)
        bias = self.output_bias(item_indices).squeeze(-1)
        return states @ weights.T + bias

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """Scores (rows, n_items + 1) of every item for each state row; column 0 (padding) is -inf."""
        scores = states @ self.output_embedding.weight.T + self.output_bias.weight.squeeze(-1)
        scores[:, PADDING_INDEX] = -math.inf
        return scores


@dataclass
class _Ragged:
    """Per-user variable-length arrays in CSR layout: row ``u`` is ``values[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    values: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row position within ``rows``, value) pairs of the given rows, concatenated."""
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        total = int(counts.sum())
        owner = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, self.values[np.repeat(starts, counts) + offsets]


def _require_columns(frame: object, columns: Iterable[str], argument: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"SequenceRecommender: {argument} must be a pandas DataFrame, got {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            raise ValueError(
                f"SequenceRecommender: {argument} is missing column {column!r} (has {list(frame.columns)})"
            )


def _as_array(values: object, column: str) -> np.ndarray:
    """One cell of a list column as an array; a missing cell (None/NaN) is an empty sequence."""
    if values is None or (np.isscalar(values) and pd.isna(values)):
        return np.asarray([])
    if np.isscalar(values):
        raise ValueError(
            f"SequenceRecommender.fit: every sequences.{column} cell must be a list (one entry per event), "
            f"got the scalar {values!r}"
        )
    return np.asarray(values)


def _available_cores() -> int:
    # The affinity mask is what this process may actually use (containers, taskset), unlike cpu_count().
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[int]:
    """Run torch with ``num_threads`` intra-op threads, restoring the previous setting afterwards."""
    wanted = num_threads if num_threads is not None else _available_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)


def _ndcg_and_hit(ranked: np.ndarray, relevant: set[int], n_relevant: int) -> tuple[float, float]:
    """Binary NDCG and hit of one ranked list; ``n_relevant`` counts relevant items the model cannot know too."""
    gains = [1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked) if item in relevant]
    if not gains:
        return 0.0, 0.0
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(n_relevant, len(ranked))))
    return sum(gains) / ideal, 1.0


class SequenceRecommender:
    """Next-item recommender over each user's recent event sequence (see the module docstring).

    After :meth:`fit`: ``network`` is the trained module (the best validation epoch's weights when validation
    was given), ``best_epoch`` its epoch, and ``history`` one dict per epoch with ``epoch``, ``train_loss``
    (sampled-softmax cross-entropy per position), ``val_ndcg_at_10`` and ``val_hr_at_10`` (None without
    validation), ``seconds`` (wall time of the epoch, validation included) and ``positions_per_second``
    (predicted positions over the training time only).
    """

    name = "sequence"

    def __init__(self, params: SequenceParams | None = None) -> None:
        if params is not None and not isinstance(params, SequenceParams):
            raise TypeError(f"SequenceRecommender: params must be a SequenceParams, got {type(params).__name__}")
        self.params = params if params is not None else SequenceParams()
        self.history: list[dict] = []
        self.best_epoch: int = 0
        self.network: LSTMNextItemNetwork | None = None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._item_ids: np.ndarray | None = None  # vocabulary: index i + 1 <-> product id _item_ids[i]
        self._user_ids: np.ndarray | None = None  # sorted; row u of the ragged arrays belongs to _user_ids[u]
        self._sequence_items: _Ragged | None = None  # last max_len + 1 item indices per user
        self._sequence_events: _Ragged | None = None  # their event indices
        self._seen: _Ragged | None = None  # sorted unique item indices each user has interacted with

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        sequences: pd.DataFrame,
        validation: pd.DataFrame | None = None,
        seen: pd.DataFrame | None = None,
        item_prior: pd.Series | None = None,
    ) -> SequenceRecommender:
        """Train on ``sequences`` (one row per user); early-stop on ``validation`` NDCG@10 when given.

        ``item_prior`` (optional, product_id -> count >= 0, e.g. recent users per item) replaces the
        items' frequency as next items as the starting point of the output bias (``popularity_prior``).
        """
        _require_columns(sequences, (USER_COL, SEQUENCE_ITEMS_COL, SEQUENCE_EVENTS_COL), "sequences")
        if validation is not None:
            _require_columns(validation, (USER_COL, ITEM_COL), "validation")
        if seen is not None:
            _require_columns(seen, (USER_COL, ITEM_COL), "seen")
        params = self.params
        # A refit that fails half-way must not leave the old network paired with a new vocabulary.
        self.network = None

        flat_items, flat_events, lengths, user_ids = self._flatten_sequences(sequences)
        self._item_ids = np.unique(flat_items)
        self._user_ids = user_ids
        flat_item_index = (np.searchsorted(self._item_ids, flat_items) + 1).astype(np.int64)
        full_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._seen = self._build_seen(_Ragged(full_indptr, flat_item_index), seen)
        # Only the last max_len + 1 events matter: max_len inputs and, for training, the item after each.
        keep = np.minimum(lengths, params.max_len + 1)
        tail_positions = self._tail_positions(full_indptr, keep)
        kept_indptr = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
        self._sequence_items = _Ragged(kept_indptr, flat_item_index[tail_positions].astype(np.int32))
        self._sequence_events = _Ragged(kept_indptr, flat_events[tail_positions])

        trainable_users = np.flatnonzero(keep >= 2)
        if len(trainable_users) == 0:
            raise ValueError(
                "SequenceRecommender.fit: every sequence has a single event, so there is no next item to learn; "
                "pass users with at least two events"
            )
        relevant = self._validation_targets(validation) if validation is not None else None

        torch.manual_seed(params.seed)
        rng = np.random.default_rng(params.seed)
        negatives_generator = torch.Generator().manual_seed(params.seed)
        n_items = len(self._item_ids)
        self.network = LSTMNextItemNetwork(n_items, params).to(self.device)
        if params.popularity_prior:
            self._init_popularity_prior(item_prior)
        sparse_parameters = [
            self.network.item_embedding.weight,
            self.network.output_embedding.weight,
            self.network.output_bias.weight,
        ]
        sparse_ids = {id(p) for p in sparse_parameters}
        dense_parameters = [p for p in self.network.parameters() if id(p) not in sparse_ids]
        # SparseAdam updates only the rows a step touched; dense Adam on the item tables would cost O(catalog).
        optimizers = [
            torch.optim.SparseAdam(sparse_parameters, lr=params.learning_rate),
            torch.optim.Adam(dense_parameters, lr=params.learning_rate),
        ]

        self.history = []
        self.best_epoch = 0
        best_ndcg = -math.inf
        best_state: dict[str, torch.Tensor] | None = None
        epochs_without_improvement = 0
        with _torch_threads(params.num_threads) as threads:
            logger.info(
                "sequence: training on %d users (%d trainable, %d positions), %d items, device=%s, threads=%d, "
                "validation users=%s",
                len(user_ids),
                len(trainable_users),
                int((keep[trainable_users] - 1).sum()),
                n_items,
                self.device,
                threads,
                len(relevant) if relevant is not None else "none",
            )
            for epoch in range(1, params.epochs + 1):
                epoch_start = time.perf_counter()
                train_loss, positions, train_seconds = self._train_epoch(
                    epoch, trainable_users, optimizers, dense_parameters, rng, negatives_generator
                )
                val_ndcg = val_hr = None
                if relevant is not None:
                    val_ndcg, val_hr = self._evaluate(relevant)
                record = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_ndcg_at_10": val_ndcg,
                    "val_hr_at_10": val_hr,
                    "seconds": time.perf_counter() - epoch_start,
                    "positions_per_second": positions / max(train_seconds, 1e-9),
                }
                self.history.append(record)
                logger.info(
                    "sequence epoch %d/%d: train_loss=%.4f val_ndcg@10=%s val_hr@10=%s positions/s=%.0f (%.1fs)",
                    epoch,
                    params.epochs,
                    train_loss,
                    "n/a" if val_ndcg is None else f"{val_ndcg:.4f}",
                    "n/a" if val_hr is None else f"{val_hr:.4f}",
                    record["positions_per_second"],
                    record["seconds"],
                )
                if val_ndcg is None:
                    self.best_epoch = epoch
                    continue
                if val_ndcg > best_ndcg:
                    best_ndcg, self.best_epoch, epochs_without_improvement = val_ndcg, epoch, 0
                    best_state = copy.deepcopy(self.network.state_dict())
                else:
                    epochs_without_improvement += 1
                    if epochs_without_improvement >= params.patience:
                        logger.info(
                            "sequence: stopping after epoch %d, no better validation NDCG@10 for %d epochs",
                            epoch,
                            params.patience,
                        )
                        break
        if best_state is not None:
            self.network.load_state_dict(best_state)
            logger.info("sequence: keeping epoch %d (val NDCG@10=%.4f)", self.best_epoch, best_ndcg)
        self.network.eval()
        return self

    def _init_popularity_prior(self, item_prior: pd.Series | None) -> None:
        """Output bias = log of each item's count (add-one smoothed, mean zero): ``item_prior`` when
        given, else how often the item is a training target."""
        if item_prior is not None:
            if (item_prior < 0).any():
                raise ValueError(f"item_prior must be counts >= 0; it has {int((item_prior < 0).sum())} negative value(s)")
            counts = np.zeros(self.network.n_items + 1)
            counts[1:] = pd.Series(self._item_ids).map(item_prior).fillna(0.0).to_numpy(np.float64)
            counts += 1.0
        else:
            # Every position but the first of its user's row is some step's target (one-event rows have none).
            indptr, values = self._sequence_items.indptr, self._sequence_items.values
            is_target = np.ones(len(values), dtype=bool)
            is_target[indptr[:-1][np.diff(indptr) > 0]] = False
            targets = values[is_target].astype(np.int64)
            counts = np.bincount(targets, minlength=self.network.n_items + 1).astype(np.float64) + 1.0
        prior = np.log(counts) - np.log(counts[1:]).mean()
        prior[PADDING_INDEX] = 0.0
        with torch.no_grad():
            self.network.output_bias.weight.copy_(torch.as_tensor(prior, dtype=torch.float32).unsqueeze(-1))

    @staticmethod
    def _flatten_sequences(sequences: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat item ids, event indices and per-user lengths, with users sorted by id (empty sequences dropped)."""
        if len(sequences) == 0:
            raise ValueError("SequenceRecommender.fit: sequences is empty; pass at least one user's sequence")
        if sequences[USER_COL].isna().any():
            raise ValueError(f"SequenceRecommender.fit: sequences.{USER_COL} has missing values; drop those rows")
        duplicated = sequences[USER_COL].duplicated()
        if duplicated.any():
            example = sequences.loc[duplicated, USER_COL].iloc[0]
            raise ValueError(
                f"SequenceRecommender.fit: sequences must have one row per user, but user {example} appears "
                "more than once; concatenate that user's events into one chronological row"
            )
        ordered = sequences.sort_values(USER_COL, kind="stable")
        item_lists = [_as_array(items, SEQUENCE_ITEMS_COL) for items in ordered[SEQUENCE_ITEMS_COL]]
        event_lists = [_as_array(events, SEQUENCE_EVENTS_COL) for events in ordered[SEQUENCE_EVENTS_COL]]
        lengths = np.fromiter((len(items) for items in item_lists), dtype=np.int64, count=len(item_lists))
        event_lengths = np.fromiter((len(events) for events in event_lists), dtype=np.int64, count=len(event_lists))
        mismatched = np.flatnonzero(lengths != event_lengths)
        if len(mismatched):
            user = ordered[USER_COL].iloc[mismatched[0]]
            raise ValueError(
                f"SequenceRecommender.fit: user {user} has {lengths[mismatched[0]]} {SEQUENCE_ITEMS_COL} but "
                f"{event_lengths[mismatched[0]]} {SEQUENCE_EVENTS_COL}; the two lists must align one event per item"
            )
        non_empty = lengths > 0
        if not non_empty.any():
            raise ValueError("SequenceRecommender.fit: every sequence is empty; pass users with at least one event")
        if not non_empty.all():
            logger.warning("sequence: ignoring %d users with an empty sequence", int((~non_empty).sum()))
        try:
            user_ids = ordered[USER_COL].to_numpy()[non_empty].astype(np.int64)
            flat_items = np.concatenate([items for items, keep in zip(item_lists, non_empty) if keep])
            # Float lists (e.g. read back from files with nulls) are fine only when every id is a whole number.
            if flat_items.dtype.kind == "f" and not np.all(np.isfinite(flat_items) & (flat_items % 1 == 0)):
                raise ValueError(f"{SEQUENCE_ITEMS_COL} holds missing or fractional ids")
            flat_items = flat_items.astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"SequenceRecommender.fit: sequences.{USER_COL} and every {SEQUENCE_ITEMS_COL} entry must be "
                f"integers without missing values ({exc})"
            ) from exc
        flat_event_names = pd.Series(np.concatenate([e for e, keep in zip(event_lists, non_empty) if keep]))
        flat_events = flat_event_names.map(EVENT_INDEX)
        if flat_events.isna().any():
            unknown = sorted({str(name) for name in flat_event_names[flat_events.isna()].unique()})
            raise ValueError(
                f"SequenceRecommender.fit: unknown {SEQUENCE_EVENTS_COL} {unknown}; expected one of {list(EVENT_TYPES)}"
            )
        return flat_items, flat_events.to_numpy(dtype=np.int8), lengths[non_empty], user_ids

    @staticmethod
    def _tail_positions(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Flat positions of the last ``keep[u]`` entries of each row ``u``, in order."""
        starts = indptr[1:] - keep
        offsets = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
        return np.repeat(starts, keep) + offsets

    def _build_seen(self, full_sequences: _Ragged, seen: pd.DataFrame | None) -> _Ragged:
        """Each user's interacted item indices: the whole sequence plus ``seen`` (items outside the vocabulary drop)."""
        n_users = len(self._user_ids)
        users = np.repeat(np.arange(n_users, dtype=np.int64), full_sequences.lengths())
        items = full_sequences.values
        if seen is not None and len(seen):
            user_index = pd.Index(self._user_ids).get_indexer(seen[USER_COL].to_numpy())
            item_index = self._item_indices(seen[ITEM_COL].to_numpy())
            known = (user_index >= 0) & (item_index > 0)
            users = np.concatenate([users, user_index[known].astype(np.int64)])
            items = np.concatenate([items, item_index[known]])
        # One int64 key per (user, item) pair sorts by user then item and removes duplicates in one pass.
        keys = np.unique(users * (len(self._item_ids) + 1) + items)
        pair_users, pair_items = np.divmod(keys, len(self._item_ids) + 1)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(pair_users, minlength=n_users))]).astype(np.int64)
        return _Ragged(indptr, pair_items.astype(np.int32))

    def _item_indices(self, product_ids: np.ndarray) -> np.ndarray:
        """Vocabulary index of each product id; 0 for products the model does not know."""
        product_ids = np.asarray(product_ids)
        if len(product_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        positions = np.searchsorted(self._item_ids, product_ids)
        positions = np.minimum(positions, len(self._item_ids) - 1)
        return np.where(self._item_ids[positions] == product_ids, positions + 1, 0).astype(np.int64)

    def _validation_targets(self, validation: pd.DataFrame) -> dict[int, tuple[set[int], int]] | None:
        """For each known validation user (by index): the relevant item indices and the count of relevant items.

        Items outside the vocabulary cannot be recommended but still count in the ideal DCG, so the metric
        is honest about what the model misses.
        """
        frame = validation[[USER_COL, ITEM_COL]].dropna().drop_duplicates()
        user_index = pd.Index(self._user_ids).get_indexer(frame[USER_COL].to_numpy())
        frame = frame.assign(_user=user_index, _item=self._item_indices(frame[ITEM_COL].to_numpy()))
        frame = frame[frame["_user"] >= 0]
        if frame.empty:
            logger.warning("sequence: no validation user appears in sequences; early stopping is disabled")
            return None
        targets: dict[int, tuple[set[int], int]] = {}
        for user, group in frame.groupby("_user", sort=True):
            items = group["_item"].to_numpy()
            targets[int(user)] = ({int(i) for i in items if i > 0}, len(items))
        return targets

    def _train_epoch(
        self,
        epoch: int,
        trainable_users: np.ndarray,
        optimizers: list[torch.optim.Optimizer],
        dense_parameters: list[nn.Parameter],
        rng: np.random.Generator,
        negatives_generator: torch.Generator,
    ) -> tuple[float, int, float]:
        """One pass over the trainable users; returns (mean loss per position, positions, seconds)."""
        params = self.params
        network = self.network
        network.train()
        lengths = self._sequence_items.lengths()[trainable_users]
        # Batches of similar length waste little compute on padding; random tie-breaking and a shuffled batch
        # order keep the gradient stream varied from epoch to epoch.
        order = trainable_users[np.lexsort((rng.random(len(trainable_users)), lengths))]
        batches = [order[start : start + params.batch_size] for start in range(0, len(order), params.batch_size)]
        rng.shuffle(batches)

        total_loss = 0.0
        total_positions = 0
        start = last_log = time.perf_counter()
        for batch_number, users in enumerate(batches, start=1):
            items, events, batch_lengths = self._padded_batch(users, window=None)
            inputs, targets = items[:, :-1], items[:, 1:]
            outputs = network.encode(inputs, events[:, :-1])
            mask = targets != PADDING_INDEX
            states = outputs[mask]
            positives = targets[mask]
            negatives = torch.randint(
                1, network.n_items + 1, (params.n_negatives,), generator=negatives_generator
            ).to(self.device)
            weights = network.output_embedding(positives)
            positive_logits = (states * weights).sum(-1) + network.output_bias(positives).squeeze(-1)
            negative_logits = network.score_items(states, negatives)
            # A sampled negative that is the position's own target is not a negative ("accidental hit").
            negative_logits = negative_logits.masked_fill(negatives.unsqueeze(0) == positives.unsqueeze(1), -math.inf)
            logits = torch.cat([positive_logits.unsqueeze(1), negative_logits], dim=1)
            loss = F.cross_entropy(logits, torch.zeros(len(positives), dtype=torch.long, device=self.device))

            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # LSTMs can explode on long sequences; the sparse tables are bounded by their few touched rows.
            nn.utils.clip_grad_norm_(dense_parameters, max_norm=5.0)
            for optimizer in optimizers:
                optimizer.step()

            total_loss += float(loss.detach()) * len(positives)
            total_positions += len(positives)
            now = time.perf_counter()
            if now - last_log >= _PROGRESS_LOG_SECONDS:
                last_log = now
                logger.info(
                    "sequence epoch %d: batch %d/%d, loss=%.4f, positions/s=%.0f",
                    epoch,
                    batch_number,
                    len(batches),
                    total_loss / total_positions,
                    total_positions / (now - start),
                )
        network.eval()
        return total_loss / max(total_positions, 1), total_positions, time.perf_counter() - start

    def _padded_batch(
        self, users: np.ndarray, window: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded item and event index tensors of the users' stored sequences.

        ``window`` keeps only each user's last ``window`` events (inference); None keeps everything stored.
        """
        owner, item_values = self._sequence_items.gather(users)
        _, event_values = self._sequence_events.gather(users)
        lengths = self._sequence_items.lengths()[users]
        if window is not None:
            drop = np.maximum(lengths - window, 0)
            position = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            keep = position >= np.repeat(drop, lengths)
            owner, item_values, event_values = owner[keep], item_values[keep], event_values[keep]
            lengths = lengths - drop
        width = int(lengths.max())
        column = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        items = np.zeros((len(users), width), dtype=np.int64)
        events = np.zeros((len(users), width), dtype=np.int64)
        items[owner, column] = item_values
        events[owner, column] = event_values
        return (
            torch.from_numpy(items).to(self.device),
            torch.from_numpy(events).to(self.device),
            torch.from_numpy(lengths.astype(np.int64)).to(self.device),
        )

    def _evaluate(self, relevant: dict[int, tuple[set[int], int]]) -> tuple[float, float]:
        """Mean NDCG@10 and HR@10 over the known validation users, seen items excluded."""
        users = np.fromiter(relevant.keys(), dtype=np.int64, count=len(relevant))
        ndcg_total = hit_total = 0.0
        for batch_users, ranked, _ in self._top_k(users, VALIDATION_K, exclude_seen=True):
            for user, items in zip(batch_users, ranked):
                relevant_items, n_relevant = relevant[int(user)]
                ndcg, hit = _ndcg_and_hit(items[items > 0], relevant_items, n_relevant)
                ndcg_total += ndcg
                hit_total += hit
        return ndcg_total / len(users), hit_total / len(users)

    # ------------------------------------------------------------------ recommend

    def _top_k(
        self, users: np.ndarray, k: int, exclude_seen: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Batches of (user indices, top item indices (0 = nothing left), scores) for the given user indices.

        The LSTM runs over users of similar length (shortest first, ``batch_size`` at a time), as in
        training: a batch is padded to its longest sequence, and in the users' own order nearly every batch
        would run over ``max_len`` steps for users who have a few (on 1M events the validation pass of
        every epoch took 2.2 s of a 5.8 s epoch on one thread, 0.6 s after). Scores are computed for up to
        ``_MAX_SCORE_CELLS`` cells at a time.
        """
        n_items = len(self._item_ids)
        k = min(k, n_items)
        batch_size = max(1, min(4096, _MAX_SCORE_CELLS // (n_items + 1)))
        by_length = users[np.argsort(np.minimum(self._sequence_items.lengths()[users], self.params.max_len), kind="stable")]
        lstm_batch = self.params.batch_size
        self.network.eval()
        with torch.no_grad():
            for start in range(0, len(by_length), batch_size):
                batch_users = by_length[start : start + batch_size]
                states = torch.cat([
                    self.network.final_state(*self._padded_batch(batch_users[at : at + lstm_batch], window=self.params.max_len))
                    for at in range(0, len(batch_users), lstm_batch)
                ])
                scores = self.network.score_all(states)
                if exclude_seen:
                    rows, seen_items = self._seen.gather(batch_users)
                    seen_rows = torch.from_numpy(rows).to(self.device)
                    seen_columns = torch.from_numpy(seen_items.astype(np.int64)).to(self.device)
                    scores[seen_rows, seen_columns] = -math.inf
                top_scores, top_items = torch.topk(scores, k, dim=1)
                top_items = top_items.masked_fill(torch.isinf(top_scores), 0)
                yield batch_users, top_items.cpu().numpy(), top_scores.cpu().numpy()

    def recommend(self, user_ids: Iterable[int], k: int, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items per known user: columns user_id, product_id, score, rank (1..k), sorted by user, rank.

        Users the model has no sequence for get no rows; with ``exclude_seen`` the user's sequence and ``seen``
        items from fit are never recommended (a user may then get fewer than ``k`` rows on a tiny catalog).
        """
        if self.network is None:
            raise RuntimeError("SequenceRecommender.recommend called before fit; call fit(...) or load(...) first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"SequenceRecommender.recommend: k must be an integer >= 1, got {k!r}")
        if np.isscalar(user_ids):
            user_ids = [user_ids]
        elif not isinstance(user_ids, (np.ndarray, pd.Series, pd.Index, list, tuple)):
            user_ids = list(user_ids)
        requested = np.asarray(user_ids)
        try:
            # Object arrays (e.g. from nullable columns) may still hold integers; floats and strings may not.
            if requested.size and requested.dtype.kind not in "iuO":
                raise TypeError(f"got dtype {requested.dtype}")
            requested = pd.unique(requested.astype(np.int64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"SequenceRecommender.recommend: user_ids must be integer ids ({exc})") from exc
        user_index = pd.Index(self._user_ids).get_indexer(requested)
        users = np.sort(user_index[user_index >= 0])  # user ids are stored sorted, so this sorts by user_id

        frames = []
        with _torch_threads(self.params.num_threads):
            for batch_users, top_items, top_scores in self._top_k(users, int(k), exclude_seen):
                valid = top_items > 0
                rows = np.repeat(batch_users, valid.sum(axis=1))
                frames.append(
                    pd.DataFrame(
                        {
                            USER_COL: self._user_ids[rows],
                            ITEM_COL: self._item_ids[top_items[valid] - 1],
                            SCORE_COL: top_scores[valid].astype(np.float64),
                            # topk returns best first and the invalid tail last, so ranks are the column numbers.
                            RANK_COL: np.broadcast_to(np.arange(1, top_items.shape[1] + 1), top_items.shape)[valid],
                        }
                    )
                )
        if not frames:
            return pd.DataFrame(
                {
                    USER_COL: pd.Series(dtype=np.int64),
                    ITEM_COL: pd.Series(dtype=np.int64),
                    SCORE_COL: pd.Series(dtype=np.float64),
                    RANK_COL: pd.Series(dtype=np.int64),
                }
            )
        result = pd.concat(frames, ignore_index=True).sort_values([USER_COL, RANK_COL], kind="stable", ignore_index=True)
        return result.astype({USER_COL: np.int64, ITEM_COL: np.int64, SCORE_COL: np.float64, RANK_COL: np.int64})

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the model to directory ``path``: weights, item vocabulary, user histories and params (json)."""
        if self.network is None:
            raise RuntimeError("SequenceRecommender.save called before fit; call fit(...) first")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.cpu() for name, tensor in self.network.state_dict().items()}
        torch.save(state, directory / _WEIGHTS_FILE)
        np.savez(directory / _VOCABULARY_FILE, item_ids=self._item_ids)
        # The histories are the model's input at recommend time, so a loaded model needs them too.
        np.savez(
            directory / _USERS_FILE,
            user_ids=self._user_ids,
            sequence_indptr=self._sequence_items.indptr,
            sequence_items=self._sequence_items.values,
            sequence_events=self._sequence_events.values,
            seen_indptr=self._seen.indptr,
            seen_items=self._seen.values,
        )
        metadata = {
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            "params": asdict(self.params),
            "n_items": len(self._item_ids),
            "best_epoch": self.best_epoch,
            "history": self.history,
        }
        (directory / _PARAMS_FILE).write_text(json.dumps(metadata, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> SequenceRecommender:
        """Read a model written by :meth:`save`."""
        directory = Path(path)
        for file_name in (_PARAMS_FILE, _WEIGHTS_FILE, _VOCABULARY_FILE, _USERS_FILE):
            if not (directory / file_name).is_file():
                raise FileNotFoundError(
                    f"SequenceRecommender.load: {directory / file_name} is missing; pass a directory written by save()"
                )
        metadata = json.loads((directory / _PARAMS_FILE).read_text())
        if metadata.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"SequenceRecommender.load: {directory} has format version {metadata.get('format_version')!r}, "
                f"this code reads {_FORMAT_VERSION}; retrain the model"
            )
        model = cls(SequenceParams(**metadata["params"]))
        model.best_epoch = int(metadata["best_epoch"])
        model.history = list(metadata["history"])
        with np.load(directory / _VOCABULARY_FILE) as vocabulary:
            model._item_ids = vocabulary["item_ids"]
        with np.load(directory / _USERS_FILE) as users:
            model._user_ids = users["user_ids"]
            model._sequence_items = _Ragged(users["sequence_indptr"], users["sequence_items"])
            model._sequence_events = _Ragged(users["sequence_indptr"], users["sequence_events"])
            model._seen = _Ragged(users["seen_indptr"], users["seen_items"])
        model.network = LSTMNextItemNetwork(int(metadata["n_items"]), model.params)
        state = torch.load(directory / _WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.network.load_state_dict(state)
        model.network.to(model.device).eval()
        return model
