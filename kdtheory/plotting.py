"""Figures of sweeps: curves along one parameter, maps over two; failed points are always shown.

Unconverged points carry NaN in the data; here they are drawn as red crosses on the axis (curves)
or crossed-out cells (maps), never interpolated over.  Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from kdtheory.sweep import write_atomic

LABELS = {
    "alpha": "α = M/N",
    "rho": "ρ",
    "delta": "Δ",
    "lam_t": "teacher ridge λ̃",
    "lam": "student ridge λ",
    "chi": "KD weight χ",
    "temperature": "temperature T",
    "eta": "trained fraction η",
    "eg": "student error ε_g",
    "eg_teacher": "teacher error ε̃_g",
    "gain": "KD gain ε_g(χ=0) − ε_g",
    "agreement": "student–teacher agreement",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def curve(ax, x, y, converged=None, *, sem=None, style="-", **kw):
    """Plot y(x); points with converged == 0 are left out and marked by red crosses at the bottom."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y) if converged is None else (np.asarray(converged) == 1) & np.isfinite(y)
    if sem is None:
        (line,) = ax.plot(np.where(ok, x, np.nan), np.where(ok, y, np.nan), style, **kw)
    else:
        line = ax.errorbar(x[ok], y[ok], yerr=np.asarray(sem)[ok], fmt=style, capsize=3, **kw)
    if (~ok).any():
        ax.plot(x[~ok], np.zeros((~ok).sum()), "x", color="red", clip_on=False,
                transform=ax.get_xaxis_transform(), label="not converged")  # fmt: skip
    return line


def heatmap(ax, ds: xr.Dataset, quantity: str, *, x: str, y: str, diverging: bool = False):
    """pcolormesh of ``quantity`` over (x, y); unconverged cells are blank with a cross."""
    z = ds[quantity].transpose(y, x).values
    conv = np.ones_like(z, dtype=bool)
    for name in ds:
        if name.startswith("converged"):
            conv &= ds[name].transpose(y, x).values == 1
    z = np.where(conv, z, np.nan)
    xs, ys = ds[x].values, ds[y].values
    kw = {}
    if diverging:
        lim = np.nanmax(np.abs(z)) if np.isfinite(z).any() else 1.0
        kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
    mesh = ax.pcolormesh(xs, ys, z, shading="nearest", **kw)
    if diverging and np.isfinite(z).any() and np.nanmin(z) < 0 < np.nanmax(z):
        ax.contour(xs, ys, z, levels=[0.0], colors="k", linewidths=1)
    bad = ~conv
    if bad.any():
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        ax.plot(xx[bad], yy[bad], "x", color="red", ms=4, label="not converged")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    if _is_log(xs):
        ax.set_xscale("log")
    if _is_log(ys):
        ax.set_yscale("log")
    plt.colorbar(mesh, ax=ax, label=label(quantity))
    return mesh


def _is_log(values) -> bool:
    v = np.asarray(values, float)
    if len(v) < 3 or (v <= 0).any():
        return False
    return np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0]), rtol=1e-6)


def save(fig, path: Path) -> None:
    """Save a figure atomically as PNG and close it."""
    write_atomic(
        Path(path), lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    )
    plt.close(fig)
