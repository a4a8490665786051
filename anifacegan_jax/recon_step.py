"""The pure pieces of supervised reconstruction-network training (no tf.data, clu or configs).

`recon_training` runs them with tfds data, summaries and configs; they also run on a bare
accelerator image (jax, flax, optax, numpy), e.g. `benchmarks/recon_device.py`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from anifacegan_jax import checkpointing
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.metrics.coefficients import coefficient_losses
from anifacegan_jax.models.recon import ReconNet, init_recon
from anifacegan_jax.types import Array, PRNGKey, PyTree


@flax.struct.dataclass
class ReconState:
  """Everything a recon training run carries between steps.

  Attributes:
    step: () int32 completed steps.
    params: ReconNet parameters.
    batch_stats: BatchNorm running statistics.
    opt_state: the optax state.
    nonfinite: () int32 steps skipped because the loss or a gradient was not finite.
  """

  step: Array
  params: PyTree
  batch_stats: PyTree
  opt_state: Any
  nonfinite: Array

  @property
  def variables(self) -> PyTree:
    return {"params": self.params, "batch_stats": self.batch_stats}


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Static weights of the supervised loss (hashable: bound into the jitted step)."""

  id: float = 1.0
  exp: float = 1.0
  angle: float = 1.0
  landmark: float = 1.0


def make_optimizer(lr: float, warmup_steps: int, num_steps: int, end_lr_factor: float = 0.01,
                   b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
  """Adam with a linear warm-up and a cosine decay to `end_lr_factor`·lr at `num_steps`."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, lr, max(1, warmup_steps), max(num_steps, warmup_steps + 1), end_value=lr * end_lr_factor)
  return optax.adam(schedule, b1=b1, b2=b2)


def create_state(key: PRNGKey, model: ReconNet, tx: optax.GradientTransformation) -> ReconState:
  variables = init_recon(model, key)
  return ReconState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]),
                    nonfinite=jnp.zeros((), jnp.int32))


def images_01(batch: dict) -> Array:
  """A batch's images in ReconNet's range."""
  return (batch["image"] + 1.0) / 2.0  # pipeline's [-1, 1] → ReconNet's [0, 1]


def train_step(state: ReconState, batch: dict, arrays: MorphableArrays, *, model: ReconNet,
               tx: optax.GradientTransformation,
               weights: LossWeights) -> tuple[ReconState, dict[str, Array]]:
  """One Adam step on a batch {'image': (B, R, R, 3) in [-1, 1], 'coefficients': (B, 257)}.

  A step whose loss or gradients are not finite leaves the state unchanged (but counts it).
  """
  def loss_fn(params):
    pred, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                images_01(batch), train=True, mutable=["batch_stats"])
    terms = coefficient_losses(pred, batch["coefficients"], arrays)
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, (terms, updates["batch_stats"])

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  leaves = jax.tree_util.tree_leaves((loss, grads))
  ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                      batch_stats=batch_stats)
  new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, state)
  new = new.replace(step=state.step + 1, nonfinite=state.nonfinite + (~ok).astype(jnp.int32))
  return new, dict(loss=loss, **terms, nonfinite_steps=new.nonfinite)


def build_model(m: Mapping[str, Any]) -> ReconNet:
  """The network of a `train_recon` config's `model` section (a ConfigDict or its JSON dict)."""
  return ReconNet(kind=m["kind"], stage_sizes=tuple(m["stage_sizes"]), width=int(m["width"]),
                  input_size=int(m["input_size"]), stem_pool=bool(m.get("stem_pool", True)))


def load_trained(workdir: str | pathlib.Path) -> tuple[ReconNet, PyTree, dict]:
  """(model, variables {'params', 'batch_stats'}, config as a dict) of the newest checkpoint of a
  reconstruction run (`train_recon` or `benchmarks/recon_device.py`), without tfds or configs."""
  step = checkpointing.latest_step(workdir)
  if step is None:
    raise checkpointing.CheckpointNotFoundError(
        f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}: train first with `python -m "
        f"anifacegan_jax.train_recon --config=configs/recon.py --workdir={workdir}`")
  manager = checkpointing.create_manager(workdir, read_only=True)
  config = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  model = build_model(config["model"])
  tx = make_optimizer(1.0, 1, 2)  # only the optimizer state's structure matters here
  target = jax.eval_shape(lambda: create_state(jax.random.key(0), model, tx))
  state = checkpointing.restore_state(workdir, target, step)
  return model, state.variables, config
