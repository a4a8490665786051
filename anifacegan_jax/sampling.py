"""Load a trained run from its workdir and render image grids with the EMA generator."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from anifacegan_jax import checkpointing, train
from anifacegan_jax import train_step as ts
from anifacegan_jax.models.generator import AnimatableGenerator, mean_radiance_codes, render
from anifacegan_jax.models.priors import Prior
from anifacegan_jax.types import Camera, Latents, PyTree


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run: its config, generator definition, EMA weights and latent prior."""

  config: ml_collections.ConfigDict
  generator: AnimatableGenerator
  ema_params: PyTree
  prior: Prior
  step: int


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> Run:
  """Restore config and state from `workdir` (newest checkpoint unless `step`)."""
  config = checkpointing.restore_config(workdir, step)
  generator, discriminator = train.build_models(config)
  g_tx, d_tx = train.build_optimizers(config)
  template = train.prior_template(config)
  target = jax.eval_shape(lambda: ts.create_state(jax.random.key(0), generator, discriminator,
                                                  g_tx, d_tx, template))
  state = checkpointing.restore_state(workdir, target, step)
  return Run(config=config, generator=generator, ema_params=state.ema_params, prior=state.prior,
             step=int(state.step))


def grid_latents(prior: Prior, key: jax.Array, num_identities: int,
                 num_expressions: int) -> Latents:
  """(identities, expressions) latents: one z_id and ε per row, expression 0 neutral."""
  key_id, key_noise, key_exp = jax.random.split(key, 3)
  z_id = prior.sample_id(key_id, num_identities)
  noise = jax.random.normal(key_noise, (num_identities, 80))
  z_exp = jnp.concatenate([jnp.zeros((1, 64)), prior.sample_exp(key_exp, num_expressions - 1)])
  shape = (num_identities, num_expressions)
  return Latents(z_id=jnp.broadcast_to(z_id[:, None], shape + (80,)),
                 z_exp=jnp.broadcast_to(z_exp[None], shape + (64,)),
                 noise=jnp.broadcast_to(noise[:, None], shape + (80,)))


def render_grid(run: Run, *, num_identities: int = 4, num_expressions: int = 3,
                yaws: tuple[float, ...] = (-0.35, 0.0, 0.35), psi: float | None = None,
                resolution: int | None = None, seed: int = 0) -> np.ndarray:
  """uint8 (identities·R, expressions·yaws·R, 3) grid; columns iterate yaws within expressions."""
  if num_identities < 1 or num_expressions < 1 or not yaws:
    raise ValueError("need at least one identity, one expression and one yaw")
  config = run.config
  psi = config.psi if psi is None else psi
  resolution = resolution or int(config.stages[0].resolution)
  key = jax.random.key(seed)
  latents = grid_latents(run.prior, key, num_identities, num_expressions)
  mean = mean_radiance_codes(run.generator, {"params": run.ema_params}, jax.random.fold_in(key, 1),
                             sample_z_id=run.prior.sample_id, num=int(config.psi_samples))
  yaw = jnp.pi / 2 + jnp.asarray(yaws, jnp.float32)
  columns = num_expressions * len(yaws)
  flat = jax.tree_util.tree_map(
      lambda x: jnp.repeat(x.reshape((-1, x.shape[-1])), len(yaws), axis=0), latents)
  camera = Camera(pitch=jnp.full((flat.z_id.shape[0],), jnp.pi / 2),
                  yaw=jnp.tile(yaw, num_identities * num_expressions))

  @jax.jit
  def draw(params, lat, cam):
    return render(run.generator, {"params": params}, lat, cam, resolution=resolution,
                  chunk_size=config.chunk_size, lock_view=True, psi=psi, mean_codes=mean).image

  images = np.asarray(draw(run.ema_params, flat, camera))
  images = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
  images = images.reshape(num_identities, columns, resolution, resolution, 3)
  return images.transpose(0, 2, 1, 3, 4).reshape(num_identities * resolution,
                                                 columns * resolution, 3)


def write_grid(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None,
               step: int | None = None, **kwargs) -> pathlib.Path:
  """Render `render_grid` for the run in `workdir` and save it as PNG; returns the path."""
  run = load_run(workdir, step)
  grid = render_grid(run, **kwargs)
  path = pathlib.Path(out) if out else (
      pathlib.Path(workdir) / "samples" / f"grid_{run.step:08d}.png")
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(grid).save(path)
  return path
