"""Training and validation batches from prepared directories (pretraining `.bin`, SFT `.npy` rows).

The files are opened through `miniglm.data.store` (the format's owner); SFT rows carry their own
length (meta.json `block_size`), so SFT batches take it from the data.

Owns how token files become `(x, y, loss_mask)` tensors, and the *data position* that makes a
resumed run draw exactly the batches an uninterrupted one would have drawn.

Reproducibility without hidden state: micro-batch number `k` of a run is a pure function of
`(seed, k)`. Its global batch (all ranks together, `batch_size * world_size` rows) comes from
`np.random.default_rng([seed, k])`; rank `r` takes rows `[r*B, (r+1)*B)`. So the data position is
one integer (`state_dict() == {"next_batch": k}`), resuming is exact, and a 2-process run draws,
as a union, exactly the rows a 1-process run with twice the batch size draws.

- Pretraining (`PretrainBatches`): random windows as in the seed, `x = data[i:i+T]`,
  `y = data[i+1:i+1+T]`, read from `np.memmap` (the file is never loaded whole).
- SFT (`SFTBatches`): rows of `train_ids.npy`/`train_mask.npy` in shuffled epochs (epoch `e` is
  the permutation drawn by `default_rng([seed, e])`), `x = ids[r, :-1]`, `y = ids[r, 1:]`,
  `loss_mask = mask[r]`.
- Validation (`pretrain_val_batches`, `sft_val_batches`): fixed order, the whole split
  (non-overlapping windows / every row) or only its first `max_batches` batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miniglm.data import DataError, store

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # x (B, T), y (B, T), loss_mask (B, T) | None


def _to_tensors(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, device: torch.device | str) -> Batch:
    device = torch.device(device)
    pin = device.type == "cuda"

    def put(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.int64 if dtype == torch.long else np.float32, copy=False))
        if pin:
            return t.pin_memory().to(device, non_blocking=True)
        return t.to(device)

    return put(x, torch.long), put(y, torch.long), None if mask is None else put(mask, torch.float32)


# --------------------------------------------------------------------------- pretraining


class PretrainBatches:
    """Random windows of `train.bin`; micro-batch `k` depends only on `(seed, k)`."""

    def __init__(self, data_dir: str | Path, meta: dict[str, Any], block_size: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 split: str = "train"):
        self.data = store.open_tokens(data_dir, split, meta)
        if len(self.data) < block_size + 2:
            raise DataError(f"{Path(data_dir) / f'{split}.bin'}: {len(self.data)} tokens, too few for "
                            f"block_size={block_size} (need at least {block_size + 2})")
        self.T, self.B, self.seed = block_size, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, device
        self.next_batch = 0

    def starts(self, k: int) -> np.ndarray:
        """Window starts of micro-batch `k` for this rank: (B,)."""
        rng = np.random.default_rng([self.seed, k])
        everyone = rng.integers(0, len(self.data) - self.T, size=self.B * self.world_size)
        return everyone[self.rank * self.B:(self.rank + 1) * self.B]

    def __next__(self) -> Batch:
        starts = self.starts(self.next_batch)
        self.next_batch += 1
        x = np.stack([self.data[i:i + self.T] for i in starts])  # (B, T)
        y = np.stack([self.data[i + 1:i + 1 + self.T] for i in starts])  # (B, T)
        return _to_tensors(x, y, None, self.device)

    def __iter__(self) -> PretrainBatches:
        return self

    def state_dict(self) -> dict[str, int]:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next_batch = int(state["next_batch"])


def pretrain_val_batches(data_dir: str | Path, meta: dict[str, Any], block_size: int, batch_size: int,
                         max_batches: int = 0, rank: int = 0, world_size: int = 1,
                         device: torch.device | str = "cpu") -> Iterator[Batch]:
    """Non-overlapping windows of `val.bin` in order: all, or the first `max_batches` global batches.

    Chunk `j` of `batch_size` windows goes to rank `j % world_size`, so the ranks together see the
    same windows as one process does.
    """
    data = store.open_tokens(data_dir, "val", meta)
    n_windows = (len(data) - 1) // block_size
    if n_windows == 0:
        raise DataError(f"{Path(data_dir) / 'val.bin'}: {len(data)} tokens, fewer than one window of "
                        f"block_size={block_size} + 1")
    if max_batches:
        n_windows = min(n_windows, max_batches * batch_size * world_size)
    for j in range(rank, -(-n_windows // batch_size), world_size):
        starts = range(j * batch_size * block_size, min((j + 1) * batch_size, n_windows) * block_size, block_size)
        x = np.stack([data[i:i + block_size] for i in starts])
        y = np.stack([data[i + 1:i + 1 + block_size] for i in starts])
        yield _to_tensors(x, y, None, device)


# --------------------------------------------------------------------------- SFT


class SFTBatches:
    """Rows of `train_ids.npy` in shuffled epochs; micro-batch `k` depends only on `(seed, k)`."""

    def __init__(self, data_dir: str | Path, meta: dict[str, Any], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu"):
        self.ids, self.mask = store.open_rows(data_dir, "train", meta)  # rows of meta["block_size"] + 1
        if len(self.ids) == 0:
            raise DataError(f"{Path(data_dir) / 'train_ids.npy'}: no rows to train on")
        self.B, self.seed, self.rank, self.world_size, self.device = batch_size, seed, rank, world_size, device
        self.next_batch = 0
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _row(self, position: int) -> int:
        """The row at `position` of the endless stream epoch 0, epoch 1, ... (each a permutation)."""
        n = len(self.ids)
        epoch = position // n
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(n)
        return int(self._perm[position % n])

    def rows(self, k: int) -> list[int]:
        first = (k * self.world_size + self.rank) * self.B
        return [self._row(p) for p in range(first, first + self.B)]

    @property
    def epoch(self) -> float:
        return self.next_batch * self.B * self.world_size / len(self.ids)

    def __next__(self) -> Batch:
        rows = sorted(self.rows(self.next_batch))  # sorted: memmap reads go forward
        self.next_batch += 1
        ids = self.ids[rows]  # (B, T+1)
        return _to_tensors(ids[:, :-1], ids[:, 1:], self.mask[rows], self.device)

    def __iter__(self) -> SFTBatches:
        return self

    def state_dict(self) -> dict[str, int]:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next_batch = int(state["next_batch"])


def sft_val_batches(data_dir: str | Path, meta: dict[str, Any], batch_size: int, max_batches: int = 0,
                    rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> Iterator[Batch]:
    """Every row of `val_ids.npy` in order, or the first `max_batches` global batches (split as above)."""
    ids, mask = store.open_rows(data_dir, "val", meta)
    n_rows = len(ids) if not max_batches else min(len(ids), max_batches * batch_size * world_size)
    for j in range(rank, -(-n_rows // batch_size), world_size):
        rows = slice(j * batch_size, min((j + 1) * batch_size, n_rows))
        block = np.asarray(ids[rows])
        yield _to_tensors(block[:, :-1], block[:, 1:], np.asarray(mask[rows]), device)
