"""Implicit (memory-reduced) meta-gradient estimation."""

from typing import Any

from keras import ops

from kerameta.src.api_export import kerameta_export
from kerameta.src.checks import check_number
from kerameta.src.checks import check_positive_int
from kerameta.src.checks import check_positive_number
from kerameta.src.engine import replicas
from kerameta.src.meta_gradients.meta_gradient import InnerLoop
from kerameta.src.meta_gradients.meta_gradient import MetaGradient
from kerameta.src.meta_gradients.meta_gradient import stop_gradients
from kerameta.src.types import Tensor


@kerameta_export
class Implicit(MetaGradient):
    """Implicit differentiation: memory independent of the inner steps.

    The inner loop solves each task's lower-level problem without keeping
    its history: every step runs on detached weights and gradients, so the
    memory of a meta-iteration does not grow with `inner_steps`. The
    meta-gradient then comes from the implicit function theorem at the
    adapted weights `phi`:

    - the conjugate-gradient method solves `A v = grad_phi L_query(phi)`,
      with `A = H + (ridge + proximal) I` and `H` the Hessian of the support
      loss in the adapted weights (one Hessian-vector product per CG step,
      no Hessian is formed);
    - the meta-learned weights `x` that are *not* adapted (the body, in the
      ANIL split) receive `grad_x L_query - grad_x <grad_phi g(x, phi), v>`,
      where `g` is the lower-level loss (one vector-Jacobian product: the
      support forward pass is recomputed with `x` in the graph);
    - with `proximal=lambda`, the lower level is
      `L_support(phi) + lambda / 2 * |phi - theta|^2` and the adapted weights'
      initialization `theta` receives `lambda * v`
      (`(I + H / lambda)^-1 grad L_query`, as iMAML).

    Two ways to use it:

    - **ANIL split** (Yang et al.): `adapted_layers=["head"]`. The head is
      solved per task; the body is meta-learned. The head's initial weights
      get no meta-gradient (the solution does not depend on where the
      inner loop started), so they stay at their initialization, as in the
      paper's code.
    - **Proximal** (iMAML): `proximal=lambda`, for any adapted weights,
      the whole network included.

    The result is exact when the inner loop has converged to the lower
    level's minimum and CG has converged; both need a well-conditioned
    problem (use `ridge` for a cross-entropy head, which is convex but not
    strongly convex). CG's relative residual is logged as `cg_residual`,
    and `fit` warns when an epoch's mean residual stays above `tolerance`.

    Combinations: the inner optimizer may not have learned weights (Meta-SGD
    rates get no implicit gradient), and gradient sharing and the
    co-learner are not supported yet; these fail at construction.

    String id: `"implicit"` (ANIL split needed).

    Args:
        cg_steps: conjugate-gradient iterations, `>= 1`. Defaults to `20`.
        ridge: `nu >= 0`: the lower-level loss gets `nu / 2 * |phi|^2`
            (in the inner loop and in the solve). Defaults to `0.0`.
        proximal: `lambda > 0` for the proximal lower level, or `None`.
            Defaults to `None`.
        tolerance: CG stops early (per task) once its relative residual
            `|A v - b| / |b|` is at most `tolerance`; a larger final
            residual is reported. Defaults to `1e-5`.
        clip_norm: if set, each task's solution `v` is rescaled to at most
            this norm (a guard against an ill-conditioned solve). Defaults
            to `None`.

    Example:

    ```python
    maml = kerameta.MAML(
        model,
        inner_steps=20,
        inner_learning_rate=0.05,
        adapted_layers=["classifier"],
        meta_gradient=kerameta.meta_gradients.Implicit(cg_steps=20),
    )
    ```

    References:

    - [Yang, Ma and Yu, 2025. Memory-Reduced Meta-Learning with Guaranteed
      Convergence](https://arxiv.org/abs/2412.12030)
    - [Rajeswaran et al., 2019. Meta-Learning with Implicit
      Gradients](https://arxiv.org/abs/1909.04630) (the proximal form)
    """

    string_id = "implicit"
    tensor_steps = True
    create_graph = False
    log_names = ("cg_residual",)

    def __init__(
        self,
        cg_steps: int = 20,
        ridge: float = 0.0,
        proximal: float | None = None,
        tolerance: float = 1e-5,
        clip_norm: float | None = None,
    ) -> None:
        self.cg_steps = check_positive_int("cg_steps", cg_steps)
        self.ridge = check_number("ridge", ridge, low=0.0)
        self.proximal = (
            None
            if proximal is None
            else check_positive_number("proximal", proximal)
        )
        self.tolerance = check_number("tolerance", tolerance, low=0.0)
        self.clip_norm = (
            None
            if clip_norm is None
            else check_positive_number("clip_norm", clip_norm)
        )

    @property
    def _damping(self) -> float:
        return self.ridge + (self.proximal or 0.0)

    def _lower_gradients(self, grads, fast, start):
        """The lower-level gradient: support loss plus ridge and proximal."""
        if self.ridge:
            grads = [g + self.ridge * f for g, f in zip(grads, fast)]
        if self.proximal is not None:
            grads = [
                g + self.proximal * (f - s)
                for g, f, s in zip(grads, fast, start)
            ]
        return grads

    def run_inner_loop(self, loop, fast, inner_steps):
        # No history: every step starts from detached weights.
        start = stop_gradients(fast)
        if inner_steps == 0:
            return start, None

        def step_body(step, carry):
            fast, _ = carry
            losses, grads = loop.gradients(fast, False, step)
            grads = self._lower_gradients(stop_gradients(grads), fast, start)
            return stop_gradients(loop.update(fast, grads, step)), losses

        # Rolled where the meta-model rolls its loop (see `MetaGradient`).
        carry = step_body(0, (start, None))
        return loop.repeat(1, inner_steps, step_body, carry)

    def outer_terms(
        self, loop: InnerLoop, initial_fast: list[Tensor], fast: list[Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        fast = stop_gradients(fast)
        _, query_grads = loop.query_gradients(fast)
        solution, residual = self._solve(
            lambda vectors: loop.hessian_vector_products(fast, vectors),
            stop_gradients(query_grads),
        )
        # The mixed term: the support gradient recomputed with the
        # meta-learned weights in the graph (through the frozen weights, and
        # through `initial_fast` in the proximal term).
        _, grads = loop.gradients(fast, True)
        grads = self._lower_gradients(grads, fast, initial_fast)
        terms = -_task_dot(grads, stop_gradients(solution))
        # The largest over every task of the batch (data parallelism).
        residual = replicas.gather_tasks(ops.stop_gradient(residual))
        return terms, {"cg_residual": ops.max(residual)}

    def _solve(self, hvp, b):
        """Conjugate gradient on every task at once (masked, fixed steps)."""
        damping = self._damping

        def apply(vectors):
            products = hvp(vectors)
            if damping:
                products = [p + damping * v for p, v in zip(products, vectors)]
            return products

        x = [ops.zeros_like(t) for t in b]
        r = list(b)
        p = list(b)
        rs = _task_dot(r, r)
        b_norm2 = rs
        target = (self.tolerance**2) * b_norm2
        zero = ops.zeros_like(rs)
        for _ in range(self.cg_steps):
            ap = apply(p)
            curvature = _task_dot(p, ap)
            # A task that has converged (or met non-positive curvature)
            # stops moving; the others go on.
            active = ops.logical_and(rs > target, curvature > 0)
            alpha = ops.where(
                active, rs / ops.where(curvature > 0, curvature, 1.0), zero
            )
            x = [xi + _per_task(alpha, pi) for xi, pi in zip(x, p)]
            r = [ri - _per_task(alpha, api) for ri, api in zip(r, ap)]
            new_rs = _task_dot(r, r)
            beta = ops.where(active, new_rs / ops.where(rs > 0, rs, 1.0), zero)
            p = [ri + _per_task(beta, pi) for ri, pi in zip(r, p)]
            rs = ops.where(active, new_rs, rs)
        residual = ops.sqrt(rs / ops.where(b_norm2 > 0, b_norm2, 1.0))
        if self.clip_norm is not None:
            norm = ops.sqrt(_task_dot(x, x))
            scale = ops.minimum(1.0, self.clip_norm / ops.maximum(norm, 1e-30))
            x = [_per_task(scale, xi) for xi in x]
        return x, residual

    def check_logs(self, logs: dict[str, Any]) -> str | None:
        residual = logs.get("cg_residual")
        if residual is None or not float(residual) > self.tolerance:
            return None
        return (
            "The implicit meta-gradient's conjugate-gradient solve did not "
            f"converge: its mean relative residual was {float(residual):.3g} "
            f"after cg_steps={self.cg_steps} (tolerance={self.tolerance}), so "
            "the meta-gradient is approximate. Raise `cg_steps`, add "
            "`ridge` (a cross-entropy head is not strongly convex), use more "
            "`inner_steps` so that the inner loop converges, or raise "
            "`tolerance` to accept it."
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "cg_steps": self.cg_steps,
            "ridge": self.ridge,
            "proximal": self.proximal,
            "tolerance": self.tolerance,
            "clip_norm": self.clip_norm,
        }

    def __repr__(self) -> str:
        return (
            f"Implicit(cg_steps={self.cg_steps}, ridge={self.ridge}, "
            f"proximal={self.proximal})"
        )


def _per_task(scalars: Tensor, tensor: Tensor) -> Tensor:
    """Multiplies each task's slice of `tensor` by its scalar."""
    shape = (-1,) + (1,) * (len(tensor.shape) - 1)
    return ops.reshape(scalars, shape) * tensor


def _task_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Each task's inner product over all tensors, shaped `(tasks,)`."""
    total = 0.0
    for x, y in zip(a, b):
        product = x * y
        total = total + ops.sum(
            ops.reshape(product, (product.shape[0], -1)), axis=1
        )
    return total
