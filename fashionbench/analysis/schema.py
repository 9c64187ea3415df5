"""The statistics' options, one home for their defaults: what ``compare``, ``report`` and ``promote``
test with unless told otherwise (``--alpha``, ``--resamples``), and what ``analysis.stats`` and
``analysis.comparison`` default to when called from a notebook or a benchmark."""

from __future__ import annotations

from dataclasses import dataclass


class AnalysisConfigError(ValueError):
    """An invalid statistics option; the message names it."""


@dataclass(frozen=True)
class AnalysisConfig:
    """How configurations are tested against each other."""

    alpha: float = 0.05  # family-wise error rate over every comparison of a report (Holm)
    resamples: int = 10_000  # bootstrap and sign-flip draws of the per-pair test
    power: float = 0.8  # what "detectable" means: found with this probability at alpha
    seed: int = 0  # of the resampling (a report is the same every time it is written)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise AnalysisConfigError(f"--alpha must be in (0, 1), got {self.alpha}")
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise AnalysisConfigError(f"--resamples must be an integer >= 1, got {self.resamples!r}")
        if not 0 < self.power < 1:
            raise AnalysisConfigError(f"--power must be in (0, 1), got {self.power}")
