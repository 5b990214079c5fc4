"""Peak memory and CPU use of a process tree, sampled while a fit runs (psutil)."""

from __future__ import annotations

import contextlib
import threading
import timeit


class ResourceMonitor:
    """While active, samples the resident memory of this process plus its children (the
    dask worker processes) in a thread, and counts the CPU time the rest of the machine
    used meanwhile (other processes competing for the cores make timings noisy).

    After exit: ``start`` and ``peak`` RSS in bytes, ``other_cpu`` the mean number of
    cores busy with processes outside this tree, ``own_cpu`` the same for this tree.
    """

    def __init__(self, interval=0.01):
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self.interval = interval
        self.start = self.peak = 0
        self.other_cpu = self.own_cpu = float("nan")
        self._stop = threading.Event()
        self._thread = None

    def _tree(self):
        procs = [self._proc]
        with contextlib.suppress(self._psutil.Error):
            procs += self._proc.children(recursive=True)
        return procs

    def _rss(self):
        total = 0
        for p in self._tree():
            with contextlib.suppress(self._psutil.Error):
                total += p.memory_info().rss
        return total

    def _cpu(self):
        """(machine busy CPU seconds, this tree's CPU seconds, wall time)."""
        t = self._psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        own = {}
        for p in self._tree():
            with contextlib.suppress(self._psutil.Error):
                c = p.cpu_times()
                own[p.pid] = c.user + c.system
        return busy, own, timeit.default_timer()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._cpu0 = self._cpu()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        busy1, own1, t1 = self._cpu()
        busy0, own0, t0 = self._cpu0
        wall = max(t1 - t0, 1e-9)
        own = sum(v - own0.get(pid, 0.0) for pid, v in own1.items())
        self.own_cpu = own / wall
        self.other_cpu = max(0.0, (busy1 - busy0) - own) / wall
        return False

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def grown_mib(self) -> float:
        """Peak minus the RSS when the monitor was entered, in MiB."""
        return (self.peak - self.start) / 2**20
