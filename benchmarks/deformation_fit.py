"""How well does a trained model's deformation field imitate the 3DMM, and what would a field that
does buy? A diagnostic of a model folder (no dataset, no discriminator).

  python benchmarks/deformation_fit.py --pretrained=M --steps=2000 --out=benchmarks/x.json

1. L_3DMM (Eq. 8-9) of the model's own deformation field on `--num_eval` prior samples, against
   the zero field's (the 3DMM expression offsets' mean square): `ratio` < 1 means the field
   follows the expression, > 1 that it is further from the 3DMM than no deformation at all.
2. The deformation network alone refitted to L_3DMM (+ the config's L_reg, L_smooth) for `--steps`
   Adam steps from the model's own weights (`--fresh`: from a new initialisation), nothing else
   changed: the same ratio along the way (can the network imitate the 3DMM, and how fast?).
3. `control` and `geometry` of the model with its own field and with the refitted one (same
   latents, cameras and reconstruction network): what control a 3DMM-following field gives this
   template. `--save=DIR` writes the model with the refitted field as a model folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # records.py, beside this script
from anifacegan_jax import curriculum, evaluation, experiment, pretrained, warmup  # noqa: E402
from anifacegan_jax import train_step as ts  # noqa: E402
from anifacegan_jax.models.priors import sample_latents  # noqa: E402
from records import header, write_record  # noqa: E402  (benchmarks/, beside this script)


def deformation_terms(generator, face, cfg, params, latents, key):
  """The unweighted Eq. 8-11 terms of `params` (no rendering: L_Ch and L_lm off)."""
  return ts.imitation_terms(generator, params, ts.Teachers(face=face, recon=None), latents,
                            None, None, key, cfg)


# One compile per (generator, step settings, shapes), shared by every call of `mean_terms`.
_jitted_terms = jax.jit(deformation_terms, static_argnums=(0, 2))


def mean_terms(run, face, cfg, params, num: int, seed: int, batch: int = 16) -> dict:
  """Terms averaged over `num` prior samples, and the zero field's L_3DMM beside them."""
  step = lambda p, lat, k: _jitted_terms(run.generator, face, cfg, p, lat, k)  # noqa: E731
  zero = jax.tree_util.tree_map(jnp.zeros_like, params["deformation"])
  zero_params = dict(params, deformation=zero)
  totals, zero_total, count = {}, 0.0, 0
  for i in range(0, num, batch):
    key = jax.random.key(seed + i)
    latents = sample_latents(run.prior, jax.random.fold_in(key, 1), min(batch, num - i))
    terms = jax.device_get(step(params, latents, key))
    zero_total += float(step(zero_params, latents, key)["deform_imitation"]) * len(latents.z_id)
    for name, value in terms.items():
      totals[name] = totals.get(name, 0.0) + float(value) * len(latents.z_id)
    count += len(latents.z_id)
  out = {name: value / count for name, value in totals.items()}
  out["zero_field_imitation"] = zero_total / count
  out["ratio"] = out["deform_imitation"] / out["zero_field_imitation"]
  return out


def field_gains(run, face, params, num: int = 64, seed: int = 0, offset: float = 0.0) -> dict:
  """How strongly the field shows each expression coefficient, on `num` prior samples.

  The field's Δ at the vertices of each target mesh S(z_id, z_exp) is read as expression
  coefficients ĉ (least squares on the 3DMM's expression offsets, −B_exp ĉ in world units, as
  Eq. 8's reference); per coefficient the slope of ĉ_k on z_exp_k over the samples is its gain
  (1: reproduced, 0: ignored). In the prior's own range, unlike a single coefficient at an
  arbitrary value. Returns {'gain': pooled slope, 'correlation': pooled, 'columns': {k: gain}}
  over the columns the prior moves. A run with `imitation.deform_identity` also has its field
  read on the identity basis (−B_id β̂, solved jointly): 'id_gain' and 'id_correlation', pooled.
  `offset` (world units) reads Δ at the vertices moved that far towards the frontal camera
  (negative: into the head) against the same vertices' offsets: how far from the mesh the field
  still carries the expression (a rendered surface need not lie on the mesh).
  """
  from anifacegan_jax.rendering.camera import camera_origin
  from anifacegan_jax.face3d import geometry
  from anifacegan_jax.models.generator import AnimatableGenerator
  identity = bool(run.config.imitation.get("deform_identity", False))
  latents = sample_latents(run.prior, jax.random.key(seed), num)
  z_exp = np.asarray(latents.z_exp)
  spread = z_exp.std(0)
  used = np.flatnonzero(spread > 0.01 * spread.max())

  @jax.jit
  def read(params, latents):
    codes = run.generator.apply({"params": params}, latents, method=AnimatableGenerator.codes)
    vertices = geometry.model_to_world(jax.vmap(lambda i, e: geometry.face_vertices(face, i, e))(
        latents.z_id, latents.z_exp))
    frontal = jnp.full((), jnp.pi / 2)  # φ = θ = π/2
    towards = camera_origin(frontal, frontal, run.generator.camera_radius) - vertices
    queries = vertices + offset * towards / jnp.linalg.norm(towards, axis=-1, keepdims=True)
    delta = jax.vmap(lambda x, c: run.generator.apply(
        {"params": params}, x, c, method=AnimatableGenerator.deform))(queries, codes)
    basis = jax.vmap(lambda e: geometry.expression_offsets(face, e))(jnp.eye(64)[used])
    if identity:
      basis = jnp.concatenate(
          [basis, jax.vmap(lambda i: geometry.identity_offsets(face, i))(jnp.eye(80))])
    a = -geometry.model_to_world(basis).reshape(basis.shape[0], -1).T  # (3V, K)
    return jnp.linalg.lstsq(a, delta.reshape(delta.shape[0], -1).T)[0].T  # (num, K)

  coefficients = np.asarray(read(params, latents))

  def slopes(z, c):
    x, y = z - z.mean(0), c - c.mean(0)
    return (x * y).sum(0) / (x * x).sum(0), float((x * y).sum() / (x * x).sum()), float(
        np.corrcoef(x.ravel(), y.ravel())[0, 1])

  columns, gain, correlation = slopes(z_exp[:, used], coefficients[:, :len(used)])
  out = dict(gain=gain, correlation=correlation,
             columns={int(k): float(g) for k, g in zip(used, columns)})
  if identity:
    _, out["id_gain"], out["id_correlation"] = slopes(np.asarray(latents.z_id),
                                                      coefficients[:, len(used):])
  return out


def _own_width(run) -> int:
  """Width of the deformation network in the run's parameters."""
  return int(run.ema_params["deformation"]["output"]["kernel"].shape[0])


def refit(run, face, cfg, steps: int, lr: float, batch: int, seed: int, log_every: int,
          fresh: bool = False, b1: float = 0.0):
  """The deformation network alone trained on the weighted Eq. 8-11 terms by
  `warmup.fit_deformation` (Adam β = (b1, the config's β2), its clip), from the model's weights
  or, `fresh`, from a new initialisation."""
  params = run.ema_params
  if fresh:
    from anifacegan_jax.models.generator import init_generator
    new = init_generator(run.generator, jax.random.key(int(run.config.seed)))
    params = dict(params, deformation=new["params"]["deformation"])
  elif run.generator.deform_hidden != _own_width(run):
    raise ValueError("a deformation network of another width starts fresh: pass --fresh")
  o = run.config.optim
  deform, curve = warmup.fit_deformation(
      run.generator, params, run.prior, face, cfg,
      ts.deformation_optimizer(lr, o.clip_norm, b1, o.b2), steps=steps, batch=batch,
      key=jax.random.key(seed), log_every=log_every,
      log=lambda entry: print(json.dumps(entry), flush=True))
  return dict(params, deformation=deform), curve


REFITTED = ", deformation refitted"


def save_refitted(source, run, out) -> pathlib.Path:
  """Model folder `out`: `run` (the refitted field in its parameters, its config) with the prior,
  step and reconstruction network of the model folder `source`."""
  path = pretrained.model_dir(source)
  info = pretrained.read_info(path)
  recon = None
  if pretrained.has_recon(path):
    recon = (json.loads((path / pretrained.RECON_CONFIG).read_text()),
             pretrained.read_recon(path)[1], str(info.get("recon", path.name)))
  source = str(info.get("workdir", path.name))
  if not source.endswith(REFITTED):  # a refit of a refit is still one
    source += REFITTED
  return pretrained.write(out, run.config, run.ema_params, run.prior, step=run.step,
                          source=source, recon=recon)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", required=True, help="model folder or a shipped name")
  parser.add_argument("--steps", type=int, default=2000, help="refit steps (0: measure only)")
  parser.add_argument("--lr", type=float, default=None, help="refit learning rate "
                      "(default: the config's optim.deform_lr)")
  parser.add_argument("--fresh", action="store_true",
                      help="refit from a newly initialised deformation network (as a run starts)")
  parser.add_argument("--batch", type=int, default=8, help="latents per refit step")
  parser.add_argument("--b1", type=float, default=0.0, help="refit Adam β1 (0: the generator's)")
  parser.add_argument("--points", type=int, default=0, help="refit query points per image "
                      "(0: the config's imitation.points; the ratio is always measured with those)")
  parser.add_argument("--noise", type=float, default=0.0, help="refit query points' std around "
                      "their vertex, world units (0: the config's imitation.noise; the ratio is "
                      "always measured with the config's)")
  parser.add_argument("--deform_hidden", type=int, default=0, help="refit a deformation network "
                      "of this width (with --fresh; 0: the model's)")
  parser.add_argument("--exp_scale", type=float, default=0.0, help="refit a deformation network "
                      "with this model.deform_exp_scale (needs --fresh; 0: the model's)")
  parser.add_argument("--identity", action="store_true", help="refit with "
                      "imitation.deform_identity (Eq. 8's reference −B_id β − B_exp γ: the field "
                      "also warps the identity to the mean face; needs --fresh)")
  parser.add_argument("--offsets", default="", help="comma-separated distances in mm: the "
                      "field gains also at the vertices moved this far towards the camera")
  parser.add_argument("--save", default="", help="write the model with the refitted field as a "
                      "model folder here (the source's reconstruction network copied along)")
  parser.add_argument("--num_eval", type=int, default=128, help="prior samples for the ratio")
  parser.add_argument("--control_num", type=int, default=128)
  parser.add_argument("--geometry_num", type=int, default=32)
  parser.add_argument("--recon", default="", help="network of `control` ('' = the config's, "
                      "else the shipped 'synthfaces')")
  parser.add_argument("--skip_metrics", action="store_true",
                      help="the field's ratios only (no control / geometry renders)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="JSON record")
  args = parser.parse_args(argv)
  if args.steps < 0 or args.batch < 1 or args.num_eval < 1 or not 0 <= args.b1 < 1:
    parser.error("--steps must be >= 0, --batch and --num_eval >= 1, --b1 in [0, 1)")
  if args.points < 0 or args.noise < 0 or args.deform_hidden < 0 or args.exp_scale < 0 or (
      (args.deform_hidden or args.exp_scale or args.identity) and not args.fresh):
    parser.error("--points, --noise, --deform_hidden and --exp_scale must be >= 0; --deform_hidden, "
                 "--exp_scale and --identity need --fresh")
  if args.save and not args.steps:
    parser.error("--save writes a refitted field: give --steps")

  try:
    offsets = [float(mm) for mm in args.offsets.split(",") if mm.strip()]
  except ValueError:
    parser.error(f"--offsets={args.offsets!r}: expected comma-separated millimetres")

  def gains(run, params):
    out = field_gains(run, face, params)
    if offsets:
      out["at_offset_mm"] = {mm: field_gains(run, face, params, offset=mm / 1000.0)
                             for mm in offsets}
    return out

  run = experiment.load_pretrained(args.pretrained)
  config = run.config
  face = experiment.load_face_model(config)
  cfg = dataclasses.replace(curriculum.step_config(config, 0), chamfer_weight=0.0,
                            landmark_weight=0.0)
  if cfg.deform_weight <= 0:
    raise SystemExit(f"{args.pretrained}: config.imitation.deform_weight is 0 (nothing to fit)")
  lr = args.lr if args.lr is not None else float(config.optim.deform_lr)
  record = header(args, run, lr=lr)
  record["own_field"] = mean_terms(run, face, cfg, run.ema_params, args.num_eval, args.seed + 1)
  record["own_field"]["gains"] = gains(run, run.ema_params)
  print(json.dumps(dict(own_field=record["own_field"])), flush=True)
  settings = evaluation.Settings(metrics=("control", "geometry"), control_num=args.control_num,
                                 geometry_num=args.geometry_num, seed=args.seed,
                                 recon=config.recon or args.recon or "synthfaces")
  with tempfile.TemporaryDirectory() as tmp:
    tick = time.perf_counter()
    record["own_metrics"] = {} if args.skip_metrics else evaluation.evaluate(run, tmp, settings)
    record["eval_s"] = round(time.perf_counter() - tick, 1)
    print(json.dumps(dict(own_metrics=record["own_metrics"])), flush=True)
    if args.steps:
      changes = dict(deform_hidden=args.deform_hidden, deform_exp_scale=args.exp_scale)
      changes = {k: v for k, v in changes.items() if v}
      if changes or args.identity:
        config = config.copy_and_resolve_references()
        config.model.update(changes)
        if args.identity:
          config.imitation.deform_identity = True
          cfg = dataclasses.replace(cfg, deform_identity=True)  # the refit field's ratio too
        run = dataclasses.replace(run, config=config,
                                  generator=run.generator.clone(**changes))
      fit_cfg = dataclasses.replace(cfg, imitation_points=args.points or cfg.imitation_points,
                                    imitation_noise=args.noise or cfg.imitation_noise)
      tick = time.perf_counter()
      params, record["refit_curve"] = refit(run, face, fit_cfg, args.steps, lr, args.batch,
                                            args.seed + 2, max(1, args.steps // 20), args.fresh,
                                            args.b1)
      record["refit_s"] = round(time.perf_counter() - tick, 1)
      record["refit_field"] = mean_terms(run, face, cfg, params, args.num_eval, args.seed + 1)
      record["refit_field"]["gains"] = gains(run, params)
      print(json.dumps(dict(refit_field=record["refit_field"])), flush=True)
      refitted = dataclasses.replace(run, ema_params=params)
      if args.save:
        record["saved"] = str(save_refitted(args.pretrained, refitted, args.save))
      record["refit_metrics"] = ({} if args.skip_metrics
                                 else evaluation.evaluate(refitted, tmp, settings))
      print(json.dumps(dict(refit_metrics=record["refit_metrics"])), flush=True)
  write_record(args.out, record)
  return record


if __name__ == "__main__":
  main()
