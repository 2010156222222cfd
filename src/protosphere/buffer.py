"""Replay memory: one small class, reservoir or class-balanced, whose whole state is tensors (checkpoint-safe).

* ``reservoir`` — Vitter's algorithm R (as in ER/DER++): after n samples have been offered, each of them is in the
  buffer with probability capacity/n.
* ``class_balanced`` — class-balanced reservoir sampling (CBRS, Chrysakis & Moens 2020): while full, a sample of a
  class that is not among the largest ones evicts a random sample of a largest class; a sample of a largest class
  replaces a random sample of its own class with probability m_c/n_c (m_c stored, n_c seen), i.e. reservoir sampling
  within the class. Class counts stay within one of each other once enough classes have been seen.

Decisions use the buffer's own CPU generator (saved in the state), so replay is reproducible and resumable; it is
seeded with the process's torch seed when the buffer is made (the run's seed: the runner seeds before it builds the
method), so runs of different seeds make independent replay decisions, as their data order and initialisation are
independent. (Earlier versions seeded every buffer with 0, so the seeds of a run shared one replay stream.) Stored
tensors stay on the device of the data given to :meth:`add`. Under DDP each rank keeps its own buffer over its own
shard of the stream, with capacity buffer_size / W (the config's ``buffer_size`` is the global memory).
"""

from __future__ import annotations

import torch


class ReplayBuffer:
    def __init__(self, capacity: int, policy: str = "reservoir", seed: int | None = None):
        if capacity < 0:
            raise ValueError(f"Replay buffer capacity must be >= 0, got {capacity}.")
        if policy not in ("reservoir", "class_balanced"):
            raise ValueError(f"Unknown buffer policy {policy!r}; use 'reservoir' or 'class_balanced'.")
        self.capacity = int(capacity)
        self.policy = policy
        self.generator = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
        self.data: dict[str, torch.Tensor] = {}
        self.size = 0
        self.num_seen = 0
        self.seen_per_class: dict[int, int] = {}

    def __len__(self) -> int:
        return self.size

    def is_empty(self) -> bool:
        return self.size == 0

    def _rand(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _allocate(self, fields: dict[str, torch.Tensor]) -> None:
        for key, value in fields.items():
            if key not in self.data:
                self.data[key] = torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=value.device)

    def add(self, labels: torch.Tensor, **fields: torch.Tensor) -> None:
        """Offer a batch: ``labels`` (B,) plus any row-aligned tensors (examples, logits, task ids...)."""
        if self.capacity == 0:
            return
        fields = {"labels": labels, **{k: v.detach() for k, v in fields.items()}}
        self._allocate(fields)
        labels_cpu = labels.detach().cpu().tolist()
        slots: list[int] = []
        rows: list[int] = []
        for row, label in enumerate(labels_cpu):
            slot = self._reservoir_slot() if self.policy == "reservoir" else self._balanced_slot(label)
            self.num_seen += 1
            self.seen_per_class[label] = self.seen_per_class.get(label, 0) + 1
            if slot is not None:
                if slot in slots:  # a later row of the same batch wins the slot, as in sequential insertion
                    del rows[slots.index(slot)]
                    slots.remove(slot)
                slots.append(slot)
                rows.append(row)
                if self.policy == "class_balanced":
                    if slot < self.size:
                        old = self._labels_host[slot]
                        self._counts[old] -= 1
                    self._counts[label] = self._counts.get(label, 0) + 1
                    self._labels_host[slot] = label
                if slot == self.size:
                    self.size += 1
        if slots:
            index = torch.tensor(slots, device=labels.device)
            source = torch.tensor(rows, device=labels.device)
            for key, value in fields.items():
                self.data[key][index] = value[source].to(self.data[key].dtype)

    def _reservoir_slot(self) -> int | None:
        if self.size < self.capacity:
            return self.size
        slot = self._rand(self.num_seen + 1)
        return slot if slot < self.capacity else None

    @property
    def _labels_host(self) -> list[int]:
        # host mirror of the stored labels so class-balanced decisions need no device sync
        if "_label_cache" not in self.__dict__:
            self._label_cache = [-1] * self.capacity
            if self.size:
                self._label_cache[: self.size] = self.data["labels"][: self.size].cpu().tolist()
        return self._label_cache

    @property
    def _counts(self) -> dict[int, int]:
        if "_count_cache" not in self.__dict__:
            self._count_cache = {}
            for label in self._labels_host[: self.size]:
                self._count_cache[label] = self._count_cache.get(label, 0) + 1
        return self._count_cache

    def _forget_caches(self) -> None:
        self.__dict__.pop("_label_cache", None)
        self.__dict__.pop("_count_cache", None)

    def _balanced_slot(self, label: int) -> int | None:
        if self.size < self.capacity:
            return self.size
        counts = {c: n for c, n in self._counts.items() if n > 0}
        largest = max(counts.values())
        if counts.get(label, 0) < largest:
            victims = [c for c, n in counts.items() if n == largest]
            victim = victims[self._rand(len(victims))]
        else:
            seen = self.seen_per_class.get(label, 0) + 1
            if self._rand(seen) >= counts[label]:
                return None
            victim = label
        positions = [i for i, stored in enumerate(self._labels_host) if stored == victim]
        return positions[self._rand(len(positions))]

    def sample(self, size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``size`` rows drawn uniformly without replacement (all rows if fewer are stored)."""
        if self.size == 0:
            raise RuntimeError("Cannot sample from an empty replay buffer.")
        count = min(size, self.size)
        index = torch.randperm(self.size, generator=generator or self.generator)[:count]
        return {key: value[index.to(value.device)] for key, value in self.data.items()}

    def all(self) -> dict[str, torch.Tensor]:
        return {key: value[: self.size] for key, value in self.data.items()}

    def class_counts(self) -> dict[int, int]:
        labels = self.data["labels"][: self.size].cpu().tolist() if self.size else []
        counts: dict[int, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        return counts

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows at ``index`` (in that order), e.g. to shrink the memory evenly per class."""
        index = index.to(torch.long)
        kept = {key: value[index.to(value.device)].clone() for key, value in self.data.items()}
        self.size = len(index)
        for key, value in kept.items():
            self.data[key].zero_()
            self.data[key][: self.size] = value
        self._forget_caches()

    def shrink_per_class(self, per_class: int) -> None:
        """Keep at most ``per_class`` random rows of each stored class (Co2L's even shrink at a new task)."""
        labels = self.data["labels"][: self.size].cpu()
        keep = []
        for label in labels.unique().tolist():
            rows = (labels == label).nonzero().flatten()
            rows = rows[torch.randperm(len(rows), generator=self.generator)[:per_class]]
            keep.append(rows)
        self.keep(torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.long))

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "size": self.size,
            "num_seen": self.num_seen,
            "seen_per_class": torch.tensor(sorted(self.seen_per_class.items()), dtype=torch.long).reshape(-1, 2),
            "generator": self.generator.get_state(),
            "data": {key: value.clone() for key, value in self.data.items()},
        }

    def to(self, device: torch.device | str) -> ReplayBuffer:
        """Keep the stored rows on ``device`` (the host mirrors of the labels stay valid: they are copies)."""
        self.data = {key: value.to(device) for key, value in self.data.items()}
        return self

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity or state["policy"] != self.policy:
            raise ValueError(
                f"Checkpointed buffer (capacity {int(state['capacity'])}, {state['policy']}) does not match the "
                f"configured one (capacity {self.capacity}, {self.policy}); resume with the same config."
            )
        self.size = int(state["size"])
        self.num_seen = int(state["num_seen"])
        self.seen_per_class = {int(k): int(v) for k, v in state["seen_per_class"].tolist()}
        self.generator.set_state(state["generator"])
        self.data = {key: value.clone() for key, value in state["data"].items()}
        self._forget_caches()
