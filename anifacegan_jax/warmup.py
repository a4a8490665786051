"""Deformation warm-up: the deformation network alone fitted to the 3DMM before the GAN starts.

A fresh deformation network explains none of the 3DMM's expression offsets, and the imitation
terms (Eq. 8-11) teach it slowly next to the image losses (BENCHMARKS.md "How fast the network
learns the 3DMM alone": 3,000 steps leave 45 % of L_3DMM, 9,000 steps 26 %). The template field
learns what it learns through the field it renders with; `warm_up_deformation` gives it, from the
first iteration, a field that already follows the 3DMM. Nothing else changes: the template, the
discriminator and their optimizer states are those of the fresh state.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from anifacegan_jax import curriculum
from anifacegan_jax import train_step as ts
from anifacegan_jax.face3d.morphable import MorphableArrays
from anifacegan_jax.models.generator import AnimatableGenerator
from anifacegan_jax.models.priors import Prior, sample_latents
from anifacegan_jax.types import PRNGKey, PyTree

# Eq. 8-11 terms and their StepConfig weights (L_Ch and L_lm need a rendered image: not here).
TERMS = (("deform_imitation", "deform_weight"), ("deform_reg", "reg_weight"),
         ("deform_smooth", "smooth_weight"))


def fit_deformation(generator: AnimatableGenerator, params: PyTree, prior: Prior,
                    face: MorphableArrays, cfg: ts.StepConfig,
                    tx: optax.GradientTransformation, *, steps: int, batch: int, key: PRNGKey,
                    log_every: int = 100, log: Callable[[dict], None] | None = None,
                    ) -> tuple[PyTree, list[dict]]:
  """`steps` updates of the deformation network `params['deformation']` alone on the weighted
  L_3DMM + L_reg + L_smooth (`batch` samples of `prior` per step, `cfg.imitation_points` query
  points each, drawn as `cfg.imitation_sampling` says; optimizer `tx`, e.g.
  `ts.deformation_optimizer`); the rest of `params` is read, never changed.

  Returns the fitted deformation parameters and the logged curve: every `log_every` steps (and
  the last) the step's unweighted terms and `ratio`, its L_3DMM over the zero field's on the same
  batch (1: no better than no deformation, 0: the 3DMM's offsets reproduced). `log` gets each
  entry as it is made.
  """
  if steps < 0 or batch < 1 or log_every < 1:
    raise ValueError(f"steps must be >= 0, batch and log_every >= 1; got {steps}, {batch}, "
                     f"{log_every}")
  if not cfg.deform_weight > 0:
    raise ValueError("the deformation fit needs L_3DMM, whose weight is 0")
  cfg = dataclasses.replace(cfg, chamfer_weight=0.0, landmark_weight=0.0)
  teachers = ts.Teachers(face=face, recon=None)
  template = {k: v for k, v in params.items() if k != "deformation"}

  def terms_of(template, deform, step_key):  # parameters as arguments: no constants in the jit
    latents = sample_latents(prior, jax.random.fold_in(step_key, 1), batch)
    return ts.imitation_terms(generator, dict(template, deformation=deform), teachers, latents,
                              None, None, step_key, cfg)

  @jax.jit
  def update(template, deform, opt_state, step_key):
    def loss_fn(d):
      terms = terms_of(template, d, step_key)
      return sum(getattr(cfg, w) * terms[n] for n, w in TERMS if n in terms), terms
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(deform)
    updates, opt_state = tx.update(grads, opt_state, deform)
    return optax.apply_updates(deform, updates), opt_state, terms

  @jax.jit
  def zero_imitation(template, step_key):
    zero = jax.tree_util.tree_map(jnp.zeros_like, params["deformation"])
    return terms_of(template, zero, step_key)["deform_imitation"]

  deform, opt_state, curve = params["deformation"], tx.init(params["deformation"]), []
  for i in range(steps):
    step_key = jax.random.fold_in(key, i)
    deform, opt_state, terms = update(template, deform, opt_state, step_key)
    if (i + 1) % log_every == 0 or i + 1 == steps:
      entry = {k: float(v) for k, v in jax.device_get(terms).items()}
      entry = dict(step=i + 1, **entry,
                   ratio=entry["deform_imitation"] / float(zero_imitation(template, step_key)))
      curve.append(entry)
      if log is not None:
        log(entry)
  return deform, curve


def warm_up_deformation(generator: AnimatableGenerator, state: ts.GanState, face: MorphableArrays,
                        cfg: ts.StepConfig, tx: optax.GradientTransformation, *, steps: int,
                        batch: int, key: PRNGKey, log_every: int = 100,
                        log: Callable[[dict], None] | None = None,
                        ) -> tuple[ts.GanState, list[dict]]:
  """`fit_deformation` on the state's generator parameters and prior, the fitted network
  written into both the parameters and their EMA; the template, the discriminator and the
  optimizer states are left as they are. Returns the state and the curve."""
  deform, curve = fit_deformation(generator, state.g_params, state.prior, face, cfg, tx,
                                  steps=steps, batch=batch, key=key, log_every=log_every, log=log)
  g_params = dict(state.g_params, deformation=deform)
  ema = dict(state.ema_params, deformation=deform)
  return state.replace(g_params=g_params, ema_params=ema), curve


def warm_up_from_config(config: ml_collections.ConfigDict, generator: AnimatableGenerator,
                        state: ts.GanState, face: MorphableArrays,
                        log: Callable[[dict], None] | None = None,
                        ) -> tuple[ts.GanState, list[dict]]:
  """`warm_up_deformation` with the run's settings: config.imitation.deform_warmup_steps steps,
  stage 0's weights, query points and per-device batch, the deformation optimizer of
  config.optim with β1 = config.imitation.deform_warmup_b1, the key config.seed + 5."""
  o, imitation = config.optim, config.imitation
  cfg = curriculum.step_config(config, 0)
  steps = int(imitation.deform_warmup_steps)
  # configs saved before the field existed warmed up with the generator's β1
  b1 = float(imitation.get("deform_warmup_b1", o.b1))
  tx = ts.deformation_optimizer(o.deform_lr, o.clip_norm, b1, o.b2)
  return warm_up_deformation(generator, state, face, cfg, tx, steps=steps,
                             batch=cfg.per_device_batch, key=jax.random.key(config.seed + 5),
                             log_every=max(1, int(config.log_every)), log=log)
