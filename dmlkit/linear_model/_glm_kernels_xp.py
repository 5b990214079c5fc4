"""Full-batch linear-model block kernels against the array API (NumPy, CuPy,
array_api_strict): the twins of ``_glm_kernels_cpu``'s ``loss_grad_block`` and
``gram_block``, computed in float64 on the block's namespace and device.  Results come
back in that namespace (the caller moves them to the host)."""

from __future__ import annotations

from array_api_compat import array_namespace, device

from dmlkit.linear_model._glm_kernels_cpu import BINOMIAL, MULTINOMIAL, POISSON, SQUARED


def _on(xp, a, like, dtype=None):
    return xp.asarray(a, dtype=dtype or xp.float64, device=device(like))


def _pointwise(xp, loss_id, raw, Y):
    """(loss (n,), dloss/draw (n, K)) of raw predictions (n, K)."""
    if loss_id == SQUARED:
        r = raw - Y
        return 0.5 * xp.sum(r * r, axis=1), r
    if loss_id == BINOMIAL:
        z, y = raw[:, 0], Y[:, 0]
        # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)); expit from the same exp
        e = xp.exp(-xp.abs(z))
        loss = xp.maximum(z, 0.0) + xp.log1p(e) - y * z
        p = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return loss, xp.reshape(p - y, (-1, 1))
    if loss_id == POISSON:
        z, y = raw[:, 0], Y[:, 0]
        mu = xp.exp(z)
        return mu - y * z, xp.reshape(mu - y, (-1, 1))
    if loss_id != MULTINOMIAL:
        raise ValueError(f"unknown loss id {loss_id}")
    K = raw.shape[1]
    m = xp.max(raw, axis=1, keepdims=True)
    lse = m + xp.log(xp.sum(xp.exp(raw - m), axis=1, keepdims=True))
    onehot = xp.astype(xp.reshape(xp.astype(Y[:, 0], xp.int64), (-1, 1))
                       == xp.reshape(xp.arange(K, device=device(raw)), (1, -1)), xp.float64)
    loss = lse[:, 0] - xp.sum(raw * onehot, axis=1)
    return loss, xp.exp(raw - lse) - onehot


def loss_grad_block(X, Y, sw, W, b, loss_id, n_threads=1):
    """One block's ``(sum s*loss, gradient in W (K, d), in b (K,))``, float64."""
    xp = array_namespace(X)
    Xf = xp.astype(X, xp.float64)
    Wx, bx = _on(xp, W, X), _on(xp, b, X)
    Yx, sx = _on(xp, Y, X), _on(xp, sw, X)
    raw = Xf @ xp.matrix_transpose(Wx) + xp.reshape(bx, (1, -1))
    loss, g = _pointwise(xp, loss_id, raw, Yx)
    g = g * xp.reshape(sx, (-1, 1))
    return xp.sum(sx * loss), xp.matrix_transpose(g) @ Xf, xp.sum(g, axis=0)


def gram_block(X, Y, sw, n_threads=1):
    """One block's ``(X'SX, X'SY, S'X, S'Y, sum s, S'Y^2)`` (float64)."""
    xp = array_namespace(X)
    Xf = xp.astype(X, xp.float64)
    Yx, sx = _on(xp, Y, X), _on(xp, sw, X)
    Xs = Xf * xp.reshape(sx, (-1, 1))
    XsT = xp.matrix_transpose(Xs)
    return (XsT @ Xf, XsT @ Yx, xp.sum(Xs, axis=0), sx @ Yx, xp.sum(sx), sx @ (Yx * Yx))
