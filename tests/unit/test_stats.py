"""Unit tests for harness.stats: known samples with known verdicts."""
import random

from harness import stats


def test_perfectly_uniform_sample_passes():
    v = stats.uniformity({"a": 100, "b": 100, "c": 100})
    assert v.ok, v.detail
    assert v.pvalue == 1.0


def test_random_uniform_sample_passes():
    # A fixed seed keeps the test deterministic; the draw is a fair choice.
    rng = random.Random(20240501)
    names = [rng.choice("abc") for _ in range(3000)]
    counts = {n: names.count(n) for n in "abc"}
    v = stats.uniformity(counts, {"a", "b", "c"})
    assert v.ok, v.detail
    assert v.pvalue > stats.FALSE_ALARM_RATE


def test_skewed_sample_fails_with_counts_in_detail():
    v = stats.uniformity({"a": 270, "b": 15, "c": 15})
    assert not v.ok
    assert v.pvalue < stats.FALSE_ALARM_RATE
    assert "NOT consistent" in v.detail
    assert "a=270, b=15, c=15" in v.detail


def test_missing_expected_backend_counts_as_zero():
    v = stats.uniformity({"a": 50, "b": 50}, {"a", "b", "c"})
    assert not v.ok
    assert v.counts == {"a": 50, "b": 50, "c": 0}
    assert "c=0" in v.detail


def test_too_small_sample_is_refused():
    v = stats.uniformity({"a": 3, "b": 2}, {"a", "b", "c"})
    assert not v.ok
    assert "too small" in v.detail
    assert stats.min_sample_for(3) == 15


def test_coverage():
    assert stats.coverage({"a": 3, "b": 1}, {"a", "b"}).ok
    v = stats.coverage({"a": 3, "x": 1}, {"a", "b"})
    assert not v.ok
    assert "never answered: b" in v.detail
    assert "unexpected backends answered: x" in v.detail
    assert "a=3, b=0, x=1" in v.detail


def test_round_robin_passes_strict_rotation():
    v = stats.round_robin(list("ABCABCA"), {"A", "B", "C"})
    assert v.ok, v.detail
    assert stats.round_robin(list("BCABCA")).ok


def test_round_robin_breaks_at_repeat_in_first_round():
    v = stats.round_robin(list("ABAC"))
    assert not v.ok
    assert "position 2" in v.detail
    assert "order: [A, B, A, C]" in v.detail


def test_round_robin_breaks_later():
    v = stats.round_robin(list("ABCABBC"))
    assert not v.ok
    assert "position 5: got B, rotation expected C" in v.detail


def test_round_robin_needs_expected_backends_and_two_rounds():
    assert not stats.round_robin(list("ABAB"), {"A", "B", "C"}).ok
    assert "too few" in stats.round_robin(list("ABC")).detail
    assert not stats.round_robin([]).ok
