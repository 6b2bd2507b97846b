"""components.significance: McNemar's exact one-sided test and the per-image correctness record."""

import math

import numpy as np
import pytest

from components.errors import UserError
from components.significance import Correctness, binomial_upper_tail, mcnemar_one_sided


@pytest.mark.parametrize("wins, trials", [(0, 0), (0, 5), (3, 3), (8, 10), (12, 20), (60, 100), (520, 1000)])
def test_the_tail_is_the_exact_binomial_sum(wins, trials):
    exact = sum(math.comb(trials, k) for k in range(wins, trials + 1)) / 2**trials
    assert binomial_upper_tail(wins, trials) == pytest.approx(exact, rel=1e-12, abs=0)


def test_the_tail_agrees_with_scipy_and_survives_large_counts():
    stats = pytest.importorskip("scipy.stats")
    for wins, trials in ((30, 35), (15, 20), (5100, 10000), (4000, 7900)):
        assert binomial_upper_tail(wins, trials) == pytest.approx(
            stats.binomtest(wins, trials, alternative="greater").pvalue, rel=1e-9)
    assert 0 < binomial_upper_tail(52000, 100000) < 1e-30  # far tail of a large n: tiny, no overflow
    assert binomial_upper_tail(11, 10) == 0.0


def test_only_discordant_images_count():
    champion = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    challenger = np.array([1, 0, 1, 1, 1, 0, 1, 1], bool)
    comparison = mcnemar_one_sided(challenger, champion)
    assert (comparison.wins, comparison.losses) == (3, 1)
    assert comparison.p_value == pytest.approx(5 / 16) and not comparison.significant(0.05)
    assert mcnemar_one_sided(champion, champion).p_value == 1.0
    with pytest.raises(ValueError, match="one length"):
        mcnemar_one_sided(challenger, champion[:-1])


def test_correctness_travels_as_a_few_bytes_per_eight_images():
    correct = np.random.default_rng(0).random(10_001) < 0.9
    record = Correctness("ab" * 32, correct).to_dict()
    assert record["images"] == 10_001 and len(record["correct_bits"]) == 4 * math.ceil(1251 / 3)  # base64 of 1,251 bytes
    restored = Correctness.from_dict(record)
    assert restored.correct.tolist() == correct.tolist() and restored.test_identity == "ab" * 32
    with pytest.raises(UserError, match="damaged"):
        Correctness.from_dict({**record, "images": 20_000})
    with pytest.raises(UserError, match="not a per-image correctness record"):
        Correctness.from_dict({"images": 3})
