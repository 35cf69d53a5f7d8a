"""RND and action-chunk entropy on tiny synthetic data; the observation embedding."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from robot_rl.monitor.embedding import ObsEmbedding
from robot_rl.monitor.entropy import DEFAULT_EPS, active_action_dims, chunk_entropy, sample_chunks
from robot_rl.monitor.rnd import RND, train_rnd


@pytest.fixture(scope="module")
def rnd():
    rng = np.random.default_rng(0)
    return train_rnd(rng.standard_normal((512, 6)), hidden=32, out_dim=8, steps=300, batch_size=128, seed=0)


class TestRND:
    def test_higher_off_distribution(self, rnd):
        rng = np.random.default_rng(1)
        inside = rnd.score(rng.standard_normal((200, 6)))
        outside = rnd.score(rng.standard_normal((200, 6)) + 4.0)
        assert np.median(outside) > 5 * np.median(inside)
        assert rnd.info["train_embeddings"] + rnd.info["val_embeddings"] == 512

    def test_save_load_gives_the_same_scores(self, rnd, tmp_path):
        x = np.random.default_rng(2).standard_normal((5, 6))
        loaded = RND.load(rnd.save(tmp_path / "rnd.npz"))
        np.testing.assert_array_equal(loaded.score(x), rnd.score(x))

    def test_wrong_width_and_bad_files(self, rnd, tmp_path):
        with pytest.raises(ValueError, match=r"\(B, 6\)"):
            rnd.score(np.zeros((2, 5)))
        with pytest.raises(FileNotFoundError):
            RND.load(tmp_path / "missing.npz")
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        with pytest.raises(ValueError, match="not an RND"):
            RND.load(tmp_path / "other.npz")

    def test_nan_input_scores_nan(self, rnd):
        assert math.isnan(rnd.score(np.full((1, 6), np.nan))[0])


class TestEntropy:
    def test_identical_chunks_give_the_floor(self):
        chunks = np.repeat(np.random.default_rng(0).uniform(-1, 1, (1, 8, 3)), 4, axis=0)
        assert chunk_entropy(chunks) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * DEFAULT_EPS))

    def test_spread_chunks_score_higher_and_grow_with_the_spread(self):
        rng = np.random.default_rng(0)
        base = rng.uniform(-1, 1, (1, 8, 3))
        tight = chunk_entropy(base + 0.01 * rng.standard_normal((16, 8, 3)))
        wide = chunk_entropy(base + 0.3 * rng.standard_normal((16, 8, 3)))
        floor = chunk_entropy(np.repeat(base, 16, axis=0))
        assert floor < tight < wide
        # Gaussian samples: about 0.5 log(2 pi e sigma^2) per entry.
        assert wide == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.09), abs=0.15)

    def test_dims_select_the_action_entries(self):
        rng = np.random.default_rng(0)
        chunks = np.concatenate([rng.standard_normal((4, 8, 1)), np.zeros((4, 8, 1))], axis=2)
        assert chunk_entropy(chunks, dims=[0]) > chunk_entropy(chunks, dims=[1])

    def test_needs_two_samples(self):
        with pytest.raises(ValueError, match="K >= 2"):
            chunk_entropy(np.zeros((1, 8, 3)))

    def test_active_dims_leave_out_a_constant_gripper(self):
        meta = SimpleNamespace(
            action_dim=4,
            action=SimpleNamespace(low=[-1.0] * 4, high=[1.0] * 4),
            normalization=SimpleNamespace(action_low=[-1, -0.9, -1, -1.001], action_high=[1, 0.9, 1, -0.999]),
        )
        assert active_action_dims(meta) == [0, 1, 2]

    def test_samples_in_one_batched_call(self):
        calls = []

        class Policy:
            horizon, action_dim = 8, 2

            def predict_batch(self, histories, noise):
                calls.append((histories.shape, noise.shape))
                return noise.astype(np.float64)

        chunks = sample_chunks(Policy(), np.zeros((2, 5)), 6, np.random.default_rng(0))
        assert chunks.shape == (6, 8, 2) and calls == [((6, 2, 5), (6, 8, 2))]


def test_embedding_standardizes_and_flattens_the_history():
    embedding = ObsEmbedding(np.array([1.0, 2.0]), np.array([0.5, 2.0]), n_obs_steps=2)
    history = np.array([[1.0, 2.0], [2.0, 6.0]])
    np.testing.assert_allclose(embedding(history), [[0.0, 0.0, 2.0, 2.0]])
    assert embedding.dim == 4
    with pytest.raises(ValueError, match="shape"):
        embedding(np.zeros((3, 2)))


def test_rnd_clip_bounds_a_single_far_entry_and_is_saved(tmp_path):
    rng = np.random.default_rng(0)
    rnd = train_rnd(rng.standard_normal((256, 4)), hidden=16, out_dim=4, steps=50, clip=3.0)
    far, farther = np.zeros((1, 4)), np.zeros((1, 4))
    far[0, 0], farther[0, 0] = 5.0, 500.0
    assert rnd.score(far)[0] == rnd.score(farther)[0]
    assert RND.load(rnd.save(tmp_path / "rnd.npz")).clip == 3.0
    unclipped = train_rnd(rng.standard_normal((256, 4)), hidden=16, out_dim=4, steps=50, clip=None)
    assert unclipped.score(farther)[0] > unclipped.score(far)[0]
    assert RND.load(unclipped.save(tmp_path / "raw.npz")).clip is None
