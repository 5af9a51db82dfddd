"""Forward-mode derivatives of the fixed-point algebra: ``Dual(value, gradient)``.

The order-parameter updates (docs/theory.md) are a few products and quotients of the channel
moments; carrying each quantity with its gradient over all directions at once (state and problem
parameters) gives the map's exact Jacobian from the kernels' moment derivatives.
"""

from __future__ import annotations

import numpy as np


class Dual:
    """A value v and its gradient d (a 1-D array over the directions): arithmetic by the chain rule."""

    __slots__ = ("d", "v")

    def __init__(self, v: float, d: np.ndarray):
        self.v, self.d = float(v), d

    @staticmethod
    def seed(v: float, index: int, n: int) -> Dual:
        """The independent variable number ``index`` of ``n``, at value v."""
        d = np.zeros(n)
        d[index] = 1.0
        return Dual(v, d)

    @staticmethod
    def const(v: float, n: int) -> Dual:
        return Dual(v, np.zeros(n))

    def __add__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v + o.v, self.d + o.d)
        return Dual(self.v + o, self.d)

    __radd__ = __add__

    def __neg__(self):
        return Dual(-self.v, -self.d)

    def __sub__(self, o):
        return self + (-o)

    def __rsub__(self, o):
        return (-self) + o

    def __mul__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v * o.v, self.v * o.d + o.v * self.d)
        return Dual(self.v * o, self.d * o)

    __rmul__ = __mul__

    def __truediv__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
        return Dual(self.v / o, self.d / o)

    def __rtruediv__(self, o):  # o / self
        return Dual(o / self.v, -o * self.d / (self.v * self.v))

    def __pow__(self, k: float):
        return Dual(self.v**k, k * self.v ** (k - 1) * self.d)
