"""The free-space check stops a cold step before it runs out of disk halfway."""
import pytest

from harness import config


def test_enough_space_passes(tmp_path):
    config.require_free_space(tmp_path, 0.001, "a small step")


def test_too_little_space_says_how_much_and_where(tmp_path):
    with pytest.raises(config.NoSpace, match=r"a huge step needs about 1e\+09 GiB free under .*missing.*GiB are"):
        config.require_free_space(tmp_path / "missing" / "dir", 1e9, "a huge step")
