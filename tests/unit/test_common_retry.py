"""The shared retry rule: bounded, exponentially growing, fully jittered delays."""

from __future__ import annotations

from src.common.retry import Backoff, full_jitter


def test_full_jitter_is_bounded_by_the_capped_exponential() -> None:
    """Retry n waits at most min(cap, base * 2**n), and the draw scales that bound."""
    assert [full_jitter(n, 0.1, 1.0, lambda: 1.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert full_jitter(3, 0.1, 1.0, lambda: 0.25) == 0.2
    assert full_jitter(10_000, 0.1, 1.0, lambda: 1.0) == 1.0  # no overflow however long the outage


def test_backoff_doubles_to_the_cap_with_full_jitter_and_resets() -> None:
    """Delays are U(0, min(cap, base*2^n)): bounded, growing, and back to base after a success."""
    top = Backoff(base_s=0.2, cap_s=20.0, rng=lambda: 1.0)
    assert [round(top.next_delay(), 6) for _ in range(9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 20.0, 20.0]
    top.reset()
    assert top.next_delay() == 0.2
    jittered = Backoff(base_s=0.2, cap_s=20.0, rng=lambda: 0.5)
    assert jittered.next_delay() == 0.1
    many = Backoff()
    assert all(0.0 <= many.next_delay() <= 20.0 for _ in range(200))
