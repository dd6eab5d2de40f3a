"""The class-weighted sampler: balance at power 1, natural frequencies at power 0, disjoint rank shares."""

import numpy as np
import pytest

from trainables.data.dataset import WeightedShardSampler

pytestmark = pytest.mark.unit

LABELS = np.repeat(np.arange(4), [500, 200, 100, 50])  # 10:1 imbalance


def class_freq(power, epochs=20, world=1):
    drawn = []
    for epoch in range(epochs):
        for rank in range(world):
            s = WeightedShardSampler(LABELS, power, num_replicas=world, rank=rank, seed=3)
            s.set_epoch(epoch)
            drawn += list(s)
    return np.bincount(LABELS[drawn], minlength=4) / len(drawn)


@pytest.mark.parametrize("world", [1, 2])
def test_power_one_draws_minority_as_often_as_majority(world):
    freq = class_freq(1.0, world=world)
    assert np.allclose(freq, 0.25, atol=0.03), freq


@pytest.mark.parametrize("world", [1, 2])
def test_power_zero_draws_in_proportion(world):
    freq = class_freq(0.0, world=world)
    assert np.allclose(freq, np.bincount(LABELS) / len(LABELS), atol=0.01), freq


def test_power_half_sits_between():
    freq = class_freq(0.5)
    natural = np.bincount(LABELS) / len(LABELS)
    assert natural[3] < freq[3] < 0.25 and 0.25 < freq[0] < natural[0]


@pytest.mark.parametrize("power", [0.0, 1.0])
@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_draws_from_a_disjoint_share(power, world):
    samplers = [WeightedShardSampler(LABELS, power, num_replicas=world, rank=r, seed=1) for r in range(world)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        shares = [set(s.shard().tolist()) for s in samplers]
        draws = [set(s) for s in samplers]
        assert set.union(*shares) == set(range(len(LABELS)))  # every image belongs to some rank
        assert sum(map(len, shares)) == len(LABELS)  # ... to exactly one
        assert all(d <= sh for d, sh in zip(draws, shares))  # ranks only draw their own share
        assert len({len(list(s)) for s in samplers}) == 1  # same step count on every rank
        # the share is stratified: each rank holds about 1/world of every class
        for sh in shares:
            counts = np.bincount(LABELS[list(sh)], minlength=4)
            assert np.all(np.abs(counts - np.bincount(LABELS) / world) <= 1)


def test_shares_change_between_epochs_and_are_reproducible():
    a = WeightedShardSampler(LABELS, 0.5, num_replicas=2, rank=0, seed=7)
    b = WeightedShardSampler(LABELS, 0.5, num_replicas=2, rank=0, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_num_samples_caps_an_epoch():
    s = WeightedShardSampler(LABELS, 1.0, num_replicas=2, rank=1, num_samples=101)
    assert len(s) == len(list(s)) == 51


def test_loss_class_weights_follow_the_power():
    from trainables.data.dataset import class_weights

    w0, w1, wh = (class_weights(LABELS, 4, p) for p in (0.0, 1.0, 0.5))
    assert np.allclose(w0, 1) and np.isclose(w1.mean(), 1) and np.isclose(wh.mean(), 1)
    counts = np.bincount(LABELS)
    assert np.allclose(w1 * counts / (w1 * counts)[0], 1)  # power 1: every class weighs the same in total
    assert np.isclose(float(wh[3] / wh[0]), np.sqrt(counts[0] / counts[3]))  # 1/sqrt(n)
