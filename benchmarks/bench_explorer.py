"""Quantization Explorer timings: one slider update of the kernel explorer, in place
versus re-creating the figure, and the size of the static page's embedded data.

* ``update``: what one slider move costs in the kernel explorer
  (:class:`quantlab.explorer.Explorer`): compute the setting with quantlab (cache
  cleared first, so it is really computed) and update the figure's artists in place,
  redrawn on the Agg canvas;
* ``update_with_image``: the same plus encoding the canvas for the ``ipywidgets.Image``
  the notebook shows (JPEG);
* ``redraw``: the in-place redraw alone (setting already computed);
* ``recreate``: the same compute, then a brand-new figure with the same content drawn on
  Agg -- what a plain ``interact`` callback that calls ``plt.subplots`` each time pays;
* the static page: seconds to precompute every setting, bytes of embedded data and of
  the whole HTML.

Each timing is the median over ``repeats`` slider moves cycling through 2..16 and 32
bits, as wall-clock and as process CPU time (this machine is shared, so CPU time is the
steadier figure). The issue's budget is 25 ms for one update.

Run ``python benchmarks/bench_explorer.py`` or call :func:`bench_explorer` (returns a dict).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch


def _median_times(
    fn: Callable[[int], Any], repeats: int, setup: Callable[[int], Any] | None = None
) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn(i)`` over ``repeats`` calls (``setup(i)`` untimed)."""
    wall, cpu = [], []
    for i in range(repeats):
        if setup is not None:
            setup(i)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _recreate_figure(data) -> Any:
    """Draw the explorer's figure from scratch (new Figure, axes and artists) on Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from quantlab import explorer as E

    fig = Figure(figsize=(8.6, 5.6), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.13, right=0.98, top=0.94, bottom=0.09, hspace=0.5)
    ax, axh = fig.subplots(2, 1, height_ratios=[1, 1.5])
    ax.set_xlim(-E.WINDOW, E.WINDOW)
    ax.set_ylim(-0.6, 1.7)
    ax.set_yticks([0, 1], ["quantized", "float32"])
    ax.set_xlabel("weight value")
    ax.set_title("64 sample weights (one group) and where each one lands", fontsize=10, loc="left")
    if data.grid is not None:
        ax.vlines(data.grid, -0.25, 1.25, colors="0.6", linewidths=0.8, alpha=0.6)
    ax.scatter(data.strip, np.ones_like(data.strip), s=22, color="#1f77b4", alpha=0.7)
    if data.available:
        links = np.stack(
            [
                np.column_stack([data.strip, np.ones_like(data.strip)]),
                np.column_stack([data.snapped, np.zeros_like(data.snapped)]),
            ],
            axis=1,
        )
        ax.add_collection(LineCollection(links, colors="0.5", linewidths=0.6, alpha=0.6))
        ax.scatter(data.snapped, np.zeros_like(data.snapped), s=26, color="#d95f02", alpha=0.6)
    floor = 10.0**-3.3
    pct = lambda c: np.where(c > 0, c * 100.0 / data.n, floor)  # noqa: E731
    axh.set_yscale("log")
    axh.set_xlim(-E.WINDOW, E.WINDOW)
    axh.set_ylim(1e-3, 100)
    axh.stairs(
        pct(data.hist_original),
        E.HIST_EDGES,
        fill=True,
        baseline=floor,
        color="#1f77b4",
        alpha=0.3,
        label="float32 weights",
    )
    if data.available:
        axh.stairs(
            pct(data.hist), E.HIST_EDGES, baseline=None, color="#d95f02", linewidth=1.6, label="after quantization"
        )
    axh.set_xlabel("weight value (bins of 0.01)")
    axh.set_ylabel("% of weights per bin\n(log scale)")
    axh.set_title("All weights of the tensor, before and after quantization", fontsize=10, loc="left")
    axh.legend(loc="upper right", fontsize=8, frameon=False)
    fig.canvas.draw()
    return fig


def bench_explorer(repeats: int = 32, threads: int = 1, static: bool = True) -> dict[str, Any]:
    """Time one kernel-explorer update (in place vs re-created figure); size the static page.

    Args:
        repeats: slider moves per timing (medians are reported); cycles through the bits.
        threads: torch threads during the timings.
        static: also time :func:`quantlab.explorer.static_data` and size the HTML.

    Returns:
        A dict with, for the normal weights and the MiniLM layer, medians in milliseconds:
        ``update_ms`` / ``update_cpu_ms`` (compute + in-place redraw), ``update_with_image_ms``
        / ``update_with_image_cpu_ms`` (plus the JPEG for the widget), ``redraw_ms`` /
        ``redraw_cpu_ms`` (in place, precomputed), ``compute_ms``, ``recreate_ms`` /
        ``recreate_cpu_ms`` (compute + new figure), ``speedup`` (recreate / update, wall);
        ``budget_ms`` (25); and with ``static``: ``static_settings``, ``static_entries``,
        ``static_data_s``, ``static_data_bytes`` (the embedded JSON) and
        ``static_html_bytes`` (the whole HTML string).
    """
    from quantlab import explorer as E

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, Any] = {"budget_ms": 25.0, "repeats": repeats, "threads": threads}
        ex = E.Explorer(bits=4)
        bits = lambda i: E.BITS[i % len(E.BITS)]  # noqa: E731
        for source in ("normal", "minilm"):  # a synthetic tensor and the real layer
            E.explore(source, 8)  # load the weights once
            ex.set(source=source, bits=4)
            res: dict[str, float] = {}
            w, c = _median_times(lambda i: ex.set(bits=bits(i)), repeats, setup=lambda i: E.clear_cache())
            res["update_ms"], res["update_cpu_ms"] = 1e3 * w, 1e3 * c
            w, c = _median_times(lambda i: (ex.set(bits=bits(i)), ex.image()), repeats, setup=lambda i: E.clear_cache())
            res["update_with_image_ms"], res["update_with_image_cpu_ms"] = 1e3 * w, 1e3 * c
            for b in E.BITS:
                E.explore(source, b)
            w, c = _median_times(lambda i: ex.set(bits=bits(i)), repeats)
            res["redraw_ms"], res["redraw_cpu_ms"] = 1e3 * w, 1e3 * c
            # each closure is timed within this iteration, with this iteration's source
            w, _ = _median_times(
                lambda i: E.explore(source, bits(i)),  # noqa: B023
                repeats,
                setup=lambda i: E.clear_cache(),
            )
            res["compute_ms"] = 1e3 * w
            w, c = _median_times(
                lambda i: _recreate_figure(E.explore(source, bits(i))),  # noqa: B023
                repeats,
                setup=lambda i: E.clear_cache(),
            )
            res["recreate_ms"], res["recreate_cpu_ms"] = 1e3 * w, 1e3 * c
            res["speedup"] = res["recreate_ms"] / res["update_ms"]
            out[source] = {k: round(v, 2) for k, v in res.items()}
        if static:
            E.clear_cache()
            t0 = time.perf_counter()
            data = E.static_data()
            out["static_data_s"] = round(time.perf_counter() - t0, 2)
            out["static_settings"] = len(data["index"])
            out["static_entries"] = len(data["entries"])
            out["static_data_bytes"] = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
            out["static_html_bytes"] = len(E.static_html(data).encode())
        return out
    finally:
        torch.set_num_threads(old_threads)


if __name__ == "__main__":
    print(json.dumps(bench_explorer(), indent=1))
