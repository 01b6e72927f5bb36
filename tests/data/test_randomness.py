"""Per-example randomness: a pure function of (seed, epoch, example index, stream), for both ways of reading it."""

from __future__ import annotations

import numpy as np
import pytest

from hf_pretrain.data import randomness


def test_example_generator_is_keyed_by_seed_epoch_index_and_stream():
    def draws(*coordinates):
        return randomness.example_generator(*coordinates).random(4).tolist()

    assert draws(3, 1, 7, 0) == draws(3, 1, 7, 0)
    others = [draws(4, 1, 7, 0), draws(3, 2, 7, 0), draws(3, 1, 8, 0), draws(3, 1, 7, 1)]
    assert all(other != draws(3, 1, 7, 0) for other in others)
    # Stream 0 is seeded from (seed, epoch, index) alone: the noise the denoising collators have always drawn.
    assert draws(3, 1, 7, 0) == np.random.default_rng([3, 1, 7]).random(4).tolist()


@pytest.mark.parametrize("coordinates, name", [((-1, 0, 0), "seed"), ((0, -2, 0), "epoch"),
                                               ((0, 0, 1.5), "example_index"), ((True, 0, 0), "seed")])
def test_bad_coordinates_are_named(coordinates, name):
    with pytest.raises(ValueError, match=f"{name}=.* is not allowed; it must be a non-negative integer"):
        randomness.example_generator(*coordinates, stream=0)


def test_uniforms_depend_only_on_key_stream_and_position():
    keys = randomness.example_keys(seed=5, epoch=0, example_indices=np.array([0, 1, 2]))
    draws = randomness.uniforms(keys, stream=2, length=50)
    assert draws.shape == (3, 50) and draws.min() >= 0.0 and draws.max() < 1.0
    # A position has the same draw whatever window is read (span masking reads positions before the row) ...
    window = randomness.uniforms(keys, stream=2, length=53, first_position=-3)
    np.testing.assert_array_equal(window[:, 3:], draws)
    # ... and whatever batch the example is in.
    alone = randomness.uniforms(randomness.example_keys(5, 0, np.array([2])), stream=2, length=50)
    np.testing.assert_array_equal(alone[0], draws[2])
    assert not np.array_equal(randomness.uniforms(keys, stream=3, length=50), draws)
    assert not np.array_equal(randomness.uniforms(randomness.example_keys(5, 1, np.array([0, 1, 2])), 2, 50), draws)
    with pytest.raises(ValueError, match="stream=8"):
        randomness.uniforms(keys, stream=randomness.NUM_STREAMS, length=4)
