"""Random distributions for request sizes, think times and latencies, in one small record.

A scenario writes a constant (``prompt_tokens = 800``, ``ttft = "0.4s"``) or a table
(``output_tokens = { dist = "lognormal", mean = 250, cv = 1.2 }``). Kinds: ``constant``,
``uniform`` (``low``, ``high``), ``exponential`` (``mean``) and ``lognormal`` (``mean``,
``cv`` = standard deviation / mean). Sampling takes the caller's ``random.Random``, so a run
is reproducible from its seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import repeat

_RATIO_BOUND = 4 * math.exp(-0.5) / math.sqrt(2.0)  # Kinderman-Monahan (random.NV_MAGICCONST)

__all__ = ["DISTRIBUTIONS", "Distribution"]

DISTRIBUTIONS = ("constant", "uniform", "exponential", "lognormal")


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """A non-negative random variable.

    Raises:
        ValueError: an unknown kind, a negative or non-finite parameter, ``low > high``.
    """

    kind: str = "constant"
    mean: float = 0.0
    low: float = 0.0
    high: float = 0.0
    cv: float = 1.0
    # The lognormal's (mu, sigma), computed once: `sample` is on the simulator's hot path.
    _params: tuple[float, float] = field(
        default=(0.0, 0.0), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"dist={self.kind!r} must be one of {', '.join(DISTRIBUTIONS)}")
        for name in ("mean", "low", "high", "cv"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}(={value!r}) must be a finite number >= 0")
        if self.kind == "uniform" and self.low > self.high:
            raise ValueError(f"low(={self.low!r}) must be <= high(={self.high!r})")
        if self.kind == "lognormal" and self.mean > 0:
            sigma2 = math.log1p(self.cv * self.cv)
            params = (math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2))
            object.__setattr__(self, "_params", params)

    @classmethod
    def constant(cls, value: float) -> Distribution:
        """Always ``value``."""
        return cls(kind="constant", mean=float(value))

    @classmethod
    def exponential(cls, mean: float) -> Distribution:
        """Exponential with the given mean."""
        return cls(kind="exponential", mean=float(mean))

    @property
    def expected(self) -> float:
        """The mathematical mean."""
        if self.kind == "uniform":
            return (self.low + self.high) / 2
        return self.mean

    def sample(self, rng: random.Random) -> float:
        """One draw using ``rng`` (the same calls to it as one call of `sampler`'s function)."""
        return self.sampler(rng)()

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A function of no arguments that draws from ``rng`` as `sample` does: a caller
        that draws many times builds it once (the kind and parameters are read here)."""
        if self.kind == "uniform":
            return partial(rng.uniform, self.low, self.high)
        if self.kind == "constant":
            return repeat(self.mean).__next__  # always the mean, no draw from rng
        if self.mean == 0:
            return repeat(0.0).__next__  # a degenerate exponential or lognormal: no draw
        if self.kind == "exponential":
            rate, uniform, log = 1.0 / self.mean, rng.random, math.log

            def exponential() -> float:
                return -log(1.0 - uniform()) / rate  # rng.expovariate(rate), one frame less

            return exponential
        mu, sigma = self._params
        uniform, log, exp, magic = rng.random, math.log, math.exp, _RATIO_BOUND

        def lognormal() -> float:
            # rng.lognormvariate(mu, sigma) in one frame instead of three: the exp of a normal
            # drawn by Kinderman and Monahan's ratio of uniforms, as random.normalvariate does.
            while True:
                u1 = uniform()
                u2 = 1.0 - uniform()
                z = magic * (u1 - 0.5) / u2
                if z * z / 4.0 <= -log(u2):
                    return exp(mu + z * sigma)

        return lognormal

    def scaled(self, factor: float) -> Distribution:
        """The same shape with every location parameter multiplied by ``factor``."""
        return replace(
            self, mean=self.mean * factor, low=self.low * factor, high=self.high * factor
        )

    def describe(self) -> str:
        """A short text form: ``800``, ``exponential(mean=2)``, ``uniform(1..5)``."""
        if self.kind == "constant":
            return f"{self.mean:g}"
        if self.kind == "uniform":
            return f"uniform({self.low:g}..{self.high:g})"
        if self.kind == "exponential":
            return f"exponential(mean={self.mean:g})"
        return f"lognormal(mean={self.mean:g}, cv={self.cv:g})"
