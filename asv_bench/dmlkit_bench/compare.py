"""What the comparison scripts (``asv_bench/compare_*.py``) share: the versions header,
running several systems on one data set with interleaved rounds, and the report lines.

The method (``asv_bench/README.md``): every system is prepared first (its input form,
the shared cluster, warm-up fits), then ``repeats`` rounds each time every system once,
in an order rotated by the round, so that a slow phase of a shared machine hits every
system alike.  Every fit is watched by a :class:`~dmlkit_bench.monitor.ResourceMonitor`
(peak RSS of the process tree, the other processes' CPU use).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from .monitor import ResourceMonitor
from .settings import Benchmark


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _version(module):
    try:
        return f"{module} {__import__(module).__version__}"
    except ImportError:
        return f"{module} not installed"


def cpu_line() -> str:
    """The CPU model and its widest x86 vector extension (AVX-512, AVX2...), as Linux's
    /proc/cpuinfo says; the figures of a kernel bound by SIMD width differ between them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"),
                                         ("avx", "AVX"), ("sse4_2", "SSE4.2"))
                 if flag in flags), "unknown SIMD")
    return f"cpu: {model}, {simd}"


def print_versions(extra=(), java=False, file=None):
    """Python, the machine (CPUs, memory, load), dmlkit and its stack, ``extra`` modules
    (e.g. ``("implicit", "sklearnex")``), Java's version, and the BLAS/OpenMP pools."""
    import numba
    import numpy as np
    import psutil
    import threadpoolctl
    from dmlkit._core.numba_utils import parallel_available

    file = file or sys.stdout
    parallel_available()  # loads numba's threading layer
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none loaded"
    print(f"python {platform.python_version()}  ({platform.platform()})", file=file)
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB "
          f"RAM, load average {load_average()}", file=file)
    print(cpu_line(), file=file)
    mods = ["dmlkit", "sklearn", "dask_ml", "dask", "distributed", *extra]
    print(" | ".join(_version(m) for m in mods), file=file)
    print(f"numpy {np.__version__} | {_version('scipy')} | {_version('pandas')} | numba "
          f"{numba.__version__} (threading layer {layer}) | threadpoolctl "
          f"{threadpoolctl.__version__}", file=file)
    if java:
        try:
            line = subprocess.run(["java", "-version"], capture_output=True, text=True,
                                  timeout=60).stderr.splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            line = "java not found"
        print(line, file=file)
    for lib in threadpoolctl.threadpool_info():
        print(f"  {lib['user_api']}: {lib['internal_api']} {lib.get('version')} "
              f"num_threads={lib['num_threads']} ({os.path.basename(lib['filepath'])})",
              file=file)


def parse_systems(text, known):
    """A comma-separated list of system names, checked against ``known``, in its order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown system(s) {sorted(unknown)}; known: {', '.join(known)}")
    return names


@dataclass
class Fit:
    seconds: float
    monitor: ResourceMonitor
    info: dict


class Comparison:
    """Runners of ``systems`` (names of the ``table``) on one data set, in this process.

    ``with Comparison(table, names, settings, data) as c: results = c.rounds(3)``.
    A shared :class:`~dmlkit_bench.cluster.DaskCluster` starts when a system uses one;
    systems that cannot run here (a missing library) are skipped with a message
    (``skipped``).  ``info(name, model)`` gives the per-fit figures shown and kept
    (e.g. ``{"n_iter": ...}`` or ``{"accuracy": ...}``).
    """

    def __init__(self, table, names, settings, data, info=None, cluster_kwargs=None,
                 out=None):
        self.table = table
        self.names = list(names)
        self.settings = settings
        self.data = data
        self.info = info or (lambda name, model: {})
        self.out = out or sys.stdout
        self.cluster = None
        self.runners = {}
        self.skipped = {}
        self._cluster_kwargs = cluster_kwargs or {}

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        for name in self.names:
            why = self.table[name].missing()
            if why:
                self.skipped[name] = why
                print(f"{name}: SKIPPED: {why}", file=self.out, flush=True)
        self.names = [n for n in self.names if n not in self.skipped]
        if any(self.table[n].uses_cluster for n in self.names):
            from .cluster import DaskCluster

            t0 = time.perf_counter()
            self.cluster = DaskCluster(**self._cluster_kwargs)
            print(f"{self.cluster} started ({time.perf_counter() - t0:.1f}s)", file=self.out)
        for name in self.names:
            t0 = time.perf_counter()
            runner = self.table[name](self.settings, self.cluster)
            self.runners[name] = runner
            runner.prepare(self.data)
            print(f"{name}: prepared and warmed in {time.perf_counter() - t0:.1f}s (not timed)",
                  file=self.out, flush=True)

    def rounds(self, repeats, fit_kwargs=None, once=()):
        """``repeats`` rounds, each fitting every system once in an order rotated by the
        round; systems in ``once`` fit in the first round only.  Returns
        ``({name: [Fit]}, {name: its last model})``; prints a line per fit."""
        fit_kwargs = fit_kwargs or {}
        results = {n: [] for n in self.names}
        last = {}
        print("\nfits (seconds, +RSS MiB, other CPU):", file=self.out)
        for r in range(repeats):
            k = r % max(1, len(self.names))
            for name in self.names[k:] + self.names[:k]:
                if r and name in once:
                    continue
                last.pop(name, None)
                gc.collect()
                with ResourceMonitor() as mon:
                    t0 = Benchmark.timer()
                    model = self.runners[name].fit(**fit_kwargs)
                    dt = Benchmark.timer() - t0
                info = self.info(name, model)
                results[name].append(Fit(dt, mon, info))
                last[name] = model
                shown = "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())
                print(f"  round {r + 1} {name:<22} {dt:8.3f}s  +{mon.grown_mib:7.0f}  "
                      f"{mon.other_cpu:5.2f}  {shown}", file=self.out, flush=True)
                del model
        return results, last

    def close(self):
        for runner in self.runners.values():
            runner.close()
        self.runners = {}
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def summary(results, table, ref=None, stat="median", file=None):
    """Print a table of :meth:`Comparison.rounds`' ``results``: per system its input, fit
    seconds (``stat``: ``"median"`` or ``"min"`` of the rounds, and their range), peak RSS,
    +RSS (MiB), other CPU, the figures of its last fit; then each system's time over
    ``ref``'s.  Returns {system: seconds}."""
    file = file or sys.stdout
    pick = {"median": statistics.median, "min": min}[stat]
    seconds = {n: pick([f.seconds for f in runs]) for n, runs in results.items() if runs}
    keys = list(dict.fromkeys(k for runs in results.values() for f in runs for k in f.info))
    w = max([24] + [len(table[n].description) for n in seconds])
    head = (f"{'system':<22} {'input':<{w}} {stat + ' s':>9} {'range':>17} {'peak RSS':>9} "
            f"{'+RSS':>7} {'other':>6}" + "".join(f" {k:>10}" for k in keys))
    print(head, file=file)
    print("-" * len(head), file=file)
    for n, runs in results.items():
        if not runs:
            continue
        secs = [f.seconds for f in runs]
        last = runs[-1]
        print(f"{n:<22} {table[n].description:<{w}} {seconds[n]:9.3f} "
              f"{f'{min(secs):.3f}..{max(secs):.3f}':>17} "
              f"{max(f.monitor.peak_mib for f in runs):9.0f} "
              f"{max(f.monitor.grown_mib for f in runs):7.0f} "
              f"{statistics.mean(f.monitor.other_cpu for f in runs):6.2f}"
              + "".join(f" {_fmt(last.info.get(k, '-')):>10}" for k in keys), file=file)
    if ref in seconds:
        print(file=file)
        for n in seconds:
            if n != ref:
                ratio_line(n, ref, seconds, f"{stat} fit time", file=file)
    return seconds


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def median(values):
    return statistics.median(values)


def ratio_line(a, b, values, what, width=45, file=None):
    """``a / b: 1.23x (what, >1: a slower)`` when both are in ``values``."""
    if a in values and b in values:
        print(f"{a + ' / ' + b:<{width}} {values[a] / values[b]:6.2f}x  ({what}, >1: {a} "
              "slower)", file=file or sys.stdout)
