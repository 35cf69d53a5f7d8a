"""Valid ranges shared by every config's validation: seeds and counts (no imports: any layer may use it).

Seeds: Gymnasium (``np_random``) and numpy's ``SeedSequence`` take any integer >= 0, torch any below 2**64,
but stable-baselines3 seeds numpy's legacy generator (below 2**32) and demo files store seeds as int64.
Seeds stop at 2**31 - 1 so that a first seed plus an episode count (seed + k) stays below 2**32 too.

Counts (episodes, steps, widths...) stop at 10**9: beyond any run this stack can finish, and below the
int64 overflows that a larger number hits deep inside (tqdm, numpy, h5py).
"""

from __future__ import annotations

MAX_SEED = 2**31 - 1
"""Largest seed any command accepts (0 is the smallest)."""
MAX_COUNT = 1_000_000_000
"""Largest count (episodes, steps, batch size, layer width...) any command accepts."""


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Refuse ``value`` outside ``[low, high]``, in the configs' message shape.

    Raises:
        ValueError: "`name` must be in [low, high]. Got value."
    """
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}]. Got {value}.")


def check_seed(name: str, value: int | None) -> None:
    """Refuse a seed outside ``[0, MAX_SEED]`` (None, "choose one", passes)."""
    if value is not None:
        check_range(name, value, 0, MAX_SEED)


def check_counts(owner: object, low: int, *names: str) -> None:
    """Refuse any of ``owner``'s ``names`` outside ``[low, MAX_COUNT]`` (a None value passes)."""
    for name in names:
        value = getattr(owner, name)
        if value is not None:
            check_range(name, value, low, MAX_COUNT)
