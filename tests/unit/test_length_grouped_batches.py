"""LengthGroupedBatches, the trainer's sampler: every row exactly once per epoch, new batches each
epoch, the same batches for the same seed and epoch (what resume relies on), and the plain
order without shuffling (what evaluation relies on)."""
import numpy as np
import pytest

from lora_exp.data import LengthGroupedBatches

SEEDS = range(6)
# (rows, batch size): n divisible by the batch size, not divisible, smaller than one batch,
# and more rows than one mega-batch (batch_size · mega) so several are sorted apart.
SHAPES = [(64, 8), (61, 8), (5, 8), (1, 1), (1037, 4)]


def _lengths(n: int, seed: int) -> list[int]:
    return np.random.default_rng(100 + seed).integers(1, 60, size=n).tolist()


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("n,batch_size", SHAPES)
def test_every_row_exactly_once_per_epoch(n, batch_size, group_by_length):
    for seed in SEEDS:
        sampler = LengthGroupedBatches(_lengths(n, seed), batch_size, seed,
                                       group_by_length=group_by_length)
        for epoch in range(3):
            batches = sampler.batches(epoch)
            rows = np.concatenate(batches)
            assert sorted(rows.tolist()) == list(range(n)), (seed, epoch)
            assert len(batches) == len(sampler) == -(-n // batch_size)  # ceil(n / batch size)
            # Only one batch may be short (the last one cut), never an empty one.
            sizes = sorted(len(b) for b in batches)
            assert sizes[1:] == [batch_size] * (len(batches) - 1) and 1 <= sizes[0] <= batch_size


@pytest.mark.parametrize("group_by_length", [True, False])
def test_batches_change_between_epochs(group_by_length):
    for seed in SEEDS:
        sampler = LengthGroupedBatches(_lengths(61, seed), 8, seed, group_by_length=group_by_length)
        epochs = [[b.tolist() for b in sampler.batches(e)] for e in range(4)]
        assert all(epochs[i] != epochs[j] for i in range(4) for j in range(i))


@pytest.mark.parametrize("group_by_length", [True, False])
def test_same_seed_and_epoch_give_identical_batches(group_by_length):
    for seed in SEEDS:
        lengths = _lengths(61, seed)
        a = LengthGroupedBatches(lengths, 8, seed, group_by_length=group_by_length)
        b = LengthGroupedBatches(list(lengths), 8, seed, group_by_length=group_by_length)
        for epoch in (0, 1, 5):
            first, again = a.batches(epoch), b.batches(epoch)
            assert [x.tolist() for x in first] == [x.tolist() for x in again]
            assert [x.tolist() for x in a.batches(epoch)] == [x.tolist() for x in first]
        other = LengthGroupedBatches(lengths, 8, seed + 1, group_by_length=group_by_length)
        assert [x.tolist() for x in other.batches(0)] != [x.tolist() for x in a.batches(0)]


@pytest.mark.parametrize("n,batch_size", SHAPES)
def test_no_shuffle_is_the_identity_order(n, batch_size):
    sampler = LengthGroupedBatches(_lengths(n, 0), batch_size, seed=7, shuffle=False)
    for epoch in (0, 3):
        batches = sampler.batches(epoch)
        assert np.concatenate(batches).tolist() == list(range(n))
        assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)


def test_grouping_puts_similar_lengths_together():
    # Within one mega-batch rows are sorted by length before batching: each batch's lengths
    # span far less than a random batch's would.
    lengths = _lengths(400, 0)
    grouped = LengthGroupedBatches(lengths, 8, 0).batches(0)
    plain = LengthGroupedBatches(lengths, 8, 0, group_by_length=False).batches(0)
    spread = lambda bs: np.mean([np.ptp(np.asarray(lengths)[b]) for b in bs])
    assert spread(grouped) < spread(plain) / 4
