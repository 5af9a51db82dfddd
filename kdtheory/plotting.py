"""Figures of sweeps: curves along one parameter, maps over two; failed points are always shown.

Unconverged points carry NaN in the data; here they are drawn as red crosses on the axis (curves)
or crossed-out cells (maps), never interpolated over.  Labels are mathtext (ε_g as
``$\\varepsilon_g$``); log axes get plain tick labels (0.01, 0.1, 1); a diverging map's colour
limits are symmetric percentiles, so one extreme cell cannot wash it out.  Matplotlib runs headless
(Agg), except inside a Jupyter kernel, whose inline backend is kept.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless for the CLIs; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from kdtheory.journal import write_atomic

LABELS = {
    "alpha": r"$\alpha = M/N$",
    "rho": r"$\rho$",
    "delta": r"$\Delta$",
    "lam_t": r"teacher ridge $\tilde\lambda$",
    "lam": r"student ridge $\lambda$",
    "chi": r"KD weight $\chi$",
    "temperature": r"temperature $T$",
    "eta": r"trained fraction $\eta$",
    "eg": r"student error $\varepsilon_g$",
    "eg_teacher": r"teacher error $\tilde\varepsilon_g$",
    "eg_nokd": r"student error without KD $\varepsilon_g(\chi=0)$",
    "gain": r"KD gain $\varepsilon_g(\chi=0) - \varepsilon_g$",
    "agreement": "student–teacher agreement",
}


def label(name: str) -> str:
    """The axis label of a parameter or quantity (mathtext), or the name itself."""
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


def symmetric_limit(z, percentile: float = 98.0) -> float:
    """Colour limit L of a diverging map drawn on [−L, L]: the ``percentile`` of |z| over the finite
    cells (1 if there are none), so a few extreme cells saturate instead of washing out the rest."""
    a = np.abs(np.asarray(z, float))
    a = a[np.isfinite(a)]
    if a.size == 0 or not a.max() > 0:
        return 1.0
    lim = float(np.percentile(a, percentile))
    return lim if lim > 0 else float(a.max())


def heatmap(ax, ds: xr.Dataset, quantity: str, *, x: str, y: str, diverging: bool = False):
    """pcolormesh of ``quantity`` over (x, y); unconverged cells are blank with a cross.

    ``diverging``: red–blue colours on [−L, L] with L = :func:`symmetric_limit` (the colour bar is
    extended where cells lie beyond it) and the zero contour drawn and labelled.
    """
    z = ds[quantity].transpose(y, x).values
    conv = np.ones_like(z, dtype=bool)
    for name in ds:
        if name.startswith("converged"):
            conv &= ds[name].transpose(y, x).values == 1
    z = np.where(conv, z, np.nan)
    xs, ys = ds[x].values, ds[y].values
    kw, extend = {}, "neither"
    if diverging:
        lim = symmetric_limit(z)
        kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        finite = z[np.isfinite(z)]
        extend = {(0, 0): "neither", (1, 0): "min", (0, 1): "max", (1, 1): "both"}[
            (int((finite < -lim).any()), int((finite > lim).any()))
        ]
    mesh = ax.pcolormesh(xs, ys, z, shading="nearest", **kw)
    if diverging and np.isfinite(z).any() and np.nanmin(z) < 0 < np.nanmax(z):
        zero = ax.contour(xs, ys, z, levels=[0.0], colors="k", linewidths=1)
        ax.clabel(zero, fmt={0.0: "gain = 0"}, fontsize=7, inline=True)
    bad = ~conv
    if bad.any():
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        ax.plot(xx[bad], yy[bad], "x", color="red", ms=4, label="not converged")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    if _is_log(xs):
        ax.set_xscale("log")
        log_ticks(ax, "x")
    if _is_log(ys):
        ax.set_yscale("log")
        log_ticks(ax, "y")
    plt.colorbar(mesh, ax=ax, label=label(quantity), extend=extend)
    return mesh


def log_ticks(ax, which: str = "x") -> None:
    """Log-scale ticks labelled as plain numbers (0.001, 0.1, 10): at each decade, or at 1-2-5 steps
    when the axis spans less than 2.5 decades (call after plotting); minor ticks unlabelled."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    subs = (1.0, 2.0, 5.0) if 0 < lo and hi / lo < 10**2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10.0, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def caption(fig, text: str, *, width: int | None = None) -> None:
    """The finding of a figure, in words and numbers, as a wrapped paragraph under its axes."""
    width = width or int(fig.get_figwidth() * 15)
    fig.text(0.01, 0.0, textwrap.fill(text, width), ha="left", va="top", fontsize=8.5)


def _is_log(values) -> bool:
    v = np.asarray(values, float)
    if len(v) < 3 or (v <= 0).any():
        return False
    return np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0]), rtol=1e-6)


def save(fig, path: Path) -> None:
    """Save a figure atomically as PNG (cropped to its artists, caption included) and close it."""
    write_atomic(
        Path(path), lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    )
    plt.close(fig)


def write_figure_set(out: Path, name: str, ds: xr.Dataset, found, figures, summary) -> list[Path]:
    """Write a figure set's NetCDF (``<name>.nc``) and its figures (``<stem>.png`` for each
    ``stem, draw`` in ``figures``, drawn as ``draw(ds, found, path)``), atomically; print the files
    and the summary lines ``summary(ds, found)``; return the paths."""
    nc = Path(out) / f"{name}.nc"
    write_atomic(nc, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
    files = [nc]
    for stem, draw in figures.items():
        path = Path(out) / f"{stem}.png"
        draw(ds, found, path)
        files.append(path)
    print(f"wrote {', '.join(str(p) for p in files)}")
    print("\n".join(summary(ds, found)))
    return files
