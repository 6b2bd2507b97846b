"""Paired comparison of two classifiers on the same test images: McNemar's exact test.

Two models scored on one test set agree on most images; only the discordant images (one model
right, the other wrong) carry evidence about which is better. Under the null hypothesis that
the challenger is no better than the champion, each discordant image is a fair coin: the
challenger's wins among the n = wins + losses discordant images follow Binomial(n, 1/2). The
one-sided p-value is the chance of at least that many wins:

    p = P(X >= wins) = sum_{k = wins}^{n} C(n, k) / 2^n

This is the exact binomial tail (no chi-square approximation), so it stays valid for a handful
of discordant images. No discordant images means no evidence: p = 1.

Per-image correctness travels as a ``Correctness`` record: the test images' correct/wrong bits
packed eight to a byte (numpy.packbits order, the test split's file order) with the identity of
the test set they were measured on, a few KB for 10,000 images.
"""

from __future__ import annotations

import base64
import dataclasses
import math

import numpy as np

from components.errors import UserError

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """The challenger against the champion on the same images.

    Attributes:
        wins: images the challenger classifies correctly and the champion does not.
        losses: images the champion classifies correctly and the challenger does not.
        p_value: one-sided exact McNemar p-value for "the challenger is better".
    """

    wins: int
    losses: int
    p_value: float

    def significant(self, alpha: float) -> bool:
        """Whether the challenger's advantage is significant at level ``alpha`` (p <= alpha)."""
        return self.p_value <= alpha


def binomial_upper_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2), exact up to floating-point rounding.

    Terms are summed in log space (log C(n, k) from lgamma) with the largest term factored out,
    so the sum neither overflows for large n (2^n) nor loses small tails to underflow.
    """
    if successes < 0 or trials < 0:
        raise ValueError(f"need 0 <= successes and 0 <= trials, got successes={successes}, trials={trials}")
    if successes == 0:
        return 1.0
    if successes > trials:
        return 0.0
    log_half_power = trials * math.log(0.5)
    log_terms = [
        math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + log_half_power
        for k in range(successes, trials + 1)
    ]
    largest = max(log_terms)
    tail = math.exp(largest) * math.fsum(math.exp(term - largest) for term in log_terms)
    return min(1.0, tail)


def mcnemar_one_sided(challenger_correct: np.ndarray, champion_correct: np.ndarray) -> PairedComparison:
    """McNemar's exact one-sided test that the challenger is more often right than the champion.

    Both arrays hold one boolean per test image, in the same image order.
    """
    challenger_correct = np.asarray(challenger_correct, dtype=bool)
    champion_correct = np.asarray(champion_correct, dtype=bool)
    if challenger_correct.shape != champion_correct.shape or challenger_correct.ndim != 1:
        raise ValueError(
            f"per-image correctness must be two 1-D arrays of one length, got shapes "
            f"{challenger_correct.shape} and {champion_correct.shape}"
        )
    wins = int(np.count_nonzero(challenger_correct & ~champion_correct))
    losses = int(np.count_nonzero(champion_correct & ~challenger_correct))
    return PairedComparison(wins=wins, losses=losses, p_value=binomial_upper_tail(wins, wins + losses))


@dataclasses.dataclass(frozen=True)
class Correctness:
    """Which test images a model classified correctly, and on which test set.

    Attributes:
        test_identity: the dataset identity of the test split (see data_prep.test_identity).
        correct: one boolean per test image, in the test split's file order.
    """

    test_identity: str
    correct: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if len(self.correct) else 0.0

    def to_dict(self) -> dict:
        bits = np.packbits(np.asarray(self.correct, dtype=bool))
        return {
            "format_version": FORMAT_VERSION,
            "test_identity": self.test_identity,
            "images": int(len(self.correct)),
            "correct_bits": base64.b64encode(bits.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, record: dict, where: str = "the correctness record") -> Correctness:
        if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{where} is not a per-image correctness record of format_version {FORMAT_VERSION}; "
                "evaluate the model again with this version of cnnpipe"
            )
        images = int(record["images"])
        packed = np.frombuffer(base64.b64decode(record["correct_bits"]), dtype=np.uint8)
        if len(packed) != (images + 7) // 8:
            raise UserError(f"{where} holds {len(packed)} bytes for {images} images; it is damaged, evaluate again")
        return cls(test_identity=str(record["test_identity"]), correct=np.unpackbits(packed)[:images].astype(bool))
