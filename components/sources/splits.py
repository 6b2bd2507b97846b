"""Seeded, stratified splits decided from labels alone (no pixels needed)."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, minimum_per_class: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): a seeded random ``fraction`` of each class is held out, at least
    ``minimum_per_class`` images of it.

    Each class keeps at least one image; both index arrays are sorted, so the source order survives.
    """
    generator = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        generator.shuffle(indices)
        count = min(max(int(round(fraction * len(indices))), minimum_per_class), len(indices) - 1)
        held_out.append(indices[:count])
    held_out_indices = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=np.int64)
    kept_indices = np.setdiff1d(np.arange(len(labels)), held_out_indices)
    return kept_indices, held_out_indices
