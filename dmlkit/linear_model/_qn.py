"""Quasi-Newton solvers that run in the driver: L-BFGS and OWL-QN.

The objective is ``F(w) = f(w) + sum_j l1_j |w_j|`` with ``f`` smooth; every evaluation
of ``f`` and its gradient is one pass over the data (the caller's ``evaluate``).  The
solver keeps its whole state in a dict of NumPy arrays and numbers (the point, its
value and gradient, the last ``m`` correction pairs), so the fit loop checkpoints it
like any other state and a resumed fit takes the same steps bit for bit.

- L-BFGS (Nocedal & Wright, Algorithm 7.4/7.5) with a line search for the strong Wolfe
  conditions (Algorithm 3.5/3.6, cubic interpolation): most iterations accept the
  first trial, one pass.
- OWL-QN (Andrew & Gao, 2007) for an L1 part: the pseudo-gradient, a direction kept in
  its orthant, steps projected onto the orthant, backtracking on the Armijo condition.

Stopping follows scipy's L-BFGS-B as scikit-learn calls it: the largest (pseudo-)
gradient component at most ``tol``, or a relative decrease of F at most ``ftol``.
"""

from __future__ import annotations

import math

import numpy as np

FTOL = 64 * np.finfo(float).eps  # scikit-learn's ftol for its lbfgs solvers
C1, C2 = 1e-4, 0.9  # sufficient decrease and curvature constants of the line searches


class QuasiNewton:
    """One solver's rules (its state lives in the dict :meth:`start` returns).

    Parameters
    ----------
    l1 : ndarray of shape (p,) or None
        Per-coordinate L1 weights (0 where unpenalised, e.g. intercepts); None or all
        zero: L-BFGS, otherwise OWL-QN.
    m : int
        Correction pairs kept.
    tol : float
        Stop when the largest (pseudo-)gradient component is at most ``tol``.
    max_ls : int
        Trials (passes) a line search may take.
    """

    def __init__(self, l1=None, *, m=10, tol=1e-4, ftol=FTOL, max_ls=50):
        self.l1 = None if l1 is None or not np.any(l1) else np.asarray(l1, dtype=np.float64)
        self.m, self.tol, self.ftol, self.max_ls = int(m), float(tol), float(ftol), int(max_ls)

    @property
    def name(self):
        return "owlqn" if self.l1 is not None else "lbfgs"

    # -- state --------------------------------------------------------------------
    def start(self, w, f, g):
        """The state at the starting point ``w`` (smooth value ``f``, gradient ``g``)."""
        w = np.asarray(w, dtype=np.float64)
        p = w.shape[0]
        return {"w": w, "f": float(f), "g": np.asarray(g, dtype=np.float64),
                "s": np.zeros((0, p)), "y": np.zeros((0, p))}

    def objective(self, w, f):
        return float(f) if self.l1 is None else float(f) + float(self.l1 @ np.abs(w))

    def pseudo_gradient(self, w, g):
        """The gradient of F (for OWL-QN its minimum-norm subgradient)."""
        if self.l1 is None:
            return g
        lam = self.l1
        pg = np.where(w > 0, g + lam, np.where(w < 0, g - lam, 0.0))
        at0 = w == 0
        pg = np.where(at0 & (g + lam < 0), g + lam, pg)
        pg = np.where(at0 & (g - lam > 0), g - lam, pg)
        return pg

    def gradient_max(self, state):
        return float(np.max(np.abs(self.pseudo_gradient(state["w"], state["g"])), initial=0.0))

    # -- one iteration -------------------------------------------------------------
    def step(self, state, evaluate):
        """One iteration: direction, line search, memory update.

        ``evaluate(w) -> (f, g)`` computes the smooth part (a pass over the data).
        Returns ``(state, status)``; ``status`` is None while iterating, else why the
        solver stopped ("gradient", "objective", "line search").
        """
        w, f, g = state["w"], state["f"], state["g"]
        pg = self.pseudo_gradient(w, g)
        if np.max(np.abs(pg), initial=0.0) <= self.tol:
            return state, "gradient"
        S, Y = state["s"], state["y"]
        d = -self._two_loop(pg, S, Y)
        if self.l1 is not None:
            d = np.where(d * pg < 0, d, 0.0)  # keep the direction in pg's orthant
        if not np.dot(d, pg) < 0:  # not a descent direction: forget the memory
            S, Y = S[:0], Y[:0]
            d = -pg
        a0 = 1.0 if len(S) else 1.0 / max(float(np.linalg.norm(d)), 1e-300)
        F = self.objective(w, f)
        if self.l1 is None:
            found = self._wolfe(evaluate, w, f, g, d, a0)
        else:
            found = self._backtrack(evaluate, w, F, g, pg, d, a0)
        if found is None:
            return state, "line search"
        w1, f1, g1 = found
        s, yv = w1 - w, g1 - g
        if np.dot(s, yv) > np.finfo(float).eps * np.dot(yv, yv):
            keep = max(0, len(S) - self.m + 1)  # the newest m - 1 pairs, then this one
            S = np.vstack([S[keep:], s])
            Y = np.vstack([Y[keep:], yv])
        new = {"w": w1, "f": float(f1), "g": g1, "s": S, "y": Y}
        F1 = self.objective(w1, f1)
        if self.gradient_max(new) <= self.tol:
            return new, "gradient"
        if F - F1 <= self.ftol * max(abs(F), abs(F1), 1.0):
            return new, "objective"
        return new, None

    @staticmethod
    def _two_loop(q, S, Y):
        """H q for the L-BFGS inverse Hessian of pairs (S, Y), initial scaling
        s'y / y'y of the newest pair."""
        q = q.copy()
        k = len(S)
        if k == 0:
            return q
        rho = 1.0 / np.einsum("ij,ij->i", S, Y)
        alpha = np.empty(k)
        for i in range(k - 1, -1, -1):
            alpha[i] = rho[i] * np.dot(S[i], q)
            q -= alpha[i] * Y[i]
        q *= np.dot(S[-1], Y[-1]) / np.dot(Y[-1], Y[-1])
        for i in range(k):
            beta = rho[i] * np.dot(Y[i], q)
            q += (alpha[i] - beta) * S[i]
        return q

    # -- line searches -------------------------------------------------------------
    def _wolfe(self, evaluate, w, f0, g0, d, a):
        """A step satisfying the strong Wolfe conditions: ``(w, f, g)`` or None."""
        dphi0 = float(np.dot(g0, d))
        lo = (0.0, f0, dphi0, w, g0)  # (a, f, dphi, w, g) with the lowest f so far
        hi = None
        for i in range(self.max_ls):
            wa = w + a * d
            fa, ga = evaluate(wa)
            fa = float(fa)
            dphia = float(np.dot(ga, d))
            trial = (a, fa, dphia, wa, ga)
            armijo = math.isfinite(fa) and fa <= f0 + C1 * a * dphi0
            if hi is None:  # bracketing
                if not armijo or (i > 0 and fa >= lo[1]):
                    hi = trial
                elif abs(dphia) <= -C2 * dphi0:
                    return wa, fa, ga
                elif dphia >= 0:
                    hi, lo = lo, trial
                else:
                    lo = trial
                    a *= 4.0
                    continue
            else:  # zoom
                if not armijo or fa >= lo[1]:
                    hi = trial
                else:
                    if abs(dphia) <= -C2 * dphi0:
                        return wa, fa, ga
                    if dphia * (hi[0] - lo[0]) >= 0:
                        hi = lo
                    lo = trial
            if abs(hi[0] - lo[0]) <= 1e-10 * max(abs(hi[0]), abs(lo[0])):
                break  # the bracket has shrunk to rounding: values no longer tell
            a = _cubic_step(lo, hi)
        if lo[0] > 0:  # no Wolfe step, but a decrease: take it
            return lo[3], lo[1], lo[4]
        return None

    def _backtrack(self, evaluate, w, F0, g0, pg, d, a):
        """OWL-QN's projected backtracking: ``(w, f, g)`` or None."""
        l1 = self.l1
        orthant = np.where(w != 0, np.sign(w), -np.sign(pg))
        for _ in range(self.max_ls):
            wa = w + a * d
            wa = np.where((l1 > 0) & (np.sign(wa) != orthant), 0.0, wa)
            fa, ga = evaluate(wa)
            Fa = self.objective(wa, fa)
            if math.isfinite(Fa) and Fa <= F0 + C1 * float(np.dot(pg, wa - w)):
                return wa, float(fa), ga
            a *= 0.5
        return None


def _cubic_step(lo, hi):
    """The minimiser of the cubic through two trials' values and slopes, kept at least
    a tenth of the interval away from its ends (bisection where there is none)."""
    a0, f0, d0 = lo[:3]
    a1, f1, d1 = hi[:3]
    width = a1 - a0
    if not (math.isfinite(f1) and math.isfinite(d1)) or width == 0:
        return a0 + 0.5 * width
    t1 = d0 + d1 - 3.0 * (f0 - f1) / (a0 - a1)
    disc = t1 * t1 - d0 * d1
    if disc >= 0:
        t2 = math.copysign(math.sqrt(disc), a1 - a0)
        denom = d1 - d0 + 2.0 * t2
        if denom != 0:
            a = a1 - (a1 - a0) * (d1 + t2 - t1) / denom
            lo_end, hi_end = sorted((a0 + 0.1 * width, a1 - 0.1 * width))
            if lo_end <= a <= hi_end:
                return a
    return a0 + 0.5 * width
