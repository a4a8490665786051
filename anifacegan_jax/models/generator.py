"""The animatable generator: deformation → manifold intersection → radiance → compositing
(paper §3.2-§3.3, SPEC §3.4).

`AnimatableGenerator` holds the four networks and renders one image's rays (`render_rays` =
`trace_rays` → `shade` → `composite`); `render` is the pure batched renderer that maps over ray
chunks with `lax.map` (optionally rematerialised with `jax.checkpoint`) so large images fit in
memory, and can run the radiance net only at valid crossings (`shade_valid`).

Warp conventions (`warp` attribute, SPEC §3.5):
  * 'single' (default, for training from scratch): Δ is in world units, the canonical point is
    x_t + Δ and both template networks see it through one box warp.
  * 'double' (released AniFaceGAN, for its checkpoints): the manifold predictor is fed
    8.3333·x_t + Δ as if it were a world point (so it is warped twice), while the radiance net
    sees x*_t + Δ* at the intersections.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from anifacegan_jax.models.deformation import DeformationField
from anifacegan_jax.models.layers import SINES, MappingNetwork, check_precision
from anifacegan_jax.models.template import BOX_WARP, ManifoldPredictor, RadianceNet
from anifacegan_jax.rendering import camera as camera_lib
from anifacegan_jax.rendering.compositing import composite_ray
from anifacegan_jax.rendering.manifolds import first_crossings, interpolate_at, manifold_levels
from anifacegan_jax.types import Array, Camera, Codes, Latents, PRNGKey, PyTree, Rays, RenderOutput

WARP_MODES = ("single", "double")
EXPRESSION_MODES = ("deformation", "template")
LOCKED_VIEW_DIRECTION = (0.0, 0.0, -1.0)


@flax.struct.dataclass
class RayOutput:
  """Per-ray results for one image; C rays, P = num_levels + 1 points per ray.

  Attributes:
    pixel: (C, 3) colour in [0, 1] (up to the sigmoid widening).
    depth: (C,) world units.
    weights: (C, P) compositing weights (background last).
    points_target: (C, P, 3) target-space intersections, world.
    points_canonical: (C, P, 3) canonical-space intersections, world.
    valid: (C, P) bool.
  """

  pixel: Array
  depth: Array
  weights: Array
  points_target: Array
  points_canonical: Array
  valid: Array


@flax.struct.dataclass
class TracedRays:
  """C rays of one image up to the radiance: P = num_levels + 1 points per ray.

  Attributes:
    points_target, points_canonical: (C, P, 3) intersections (background last), world.
    valid: (C, P) bool; the radiance at an invalid point cannot change the image (α = 0).
    directions: (C, 3) view directions fed to the radiance net.
    distances: (C, P) distance of each target point from the ray origin (z of Eq. 4-5).
  """

  points_target: Array
  points_canonical: Array
  valid: Array
  directions: Array
  distances: Array


class AnimatableGenerator(nn.Module):
  """Template field (GRAM) + deformation field F, rendered with radiance manifolds.

  Attributes:
    warp: 'single' or 'double' (see module docstring).
    crossing: 'decreasing' (GRAM) or 'either' (released AniFaceGAN) first-crossing rule.
    min_gap: GRAM's |s_hi − s_lo| guard (0.05; released AniFaceGAN: 0).
    num_samples: samples per ray (64).
    near, far: sample range along the unit ray direction, world units (0.88, 1.12).
    num_levels, levels_start, levels_end: the manifold iso-values linspace(23, 8, 23).
    background_z: world z of the background plane (−0.12).
    delta: compositing interval length (0.04).
    white_background: paint the background point white (released `white_back` meaning).
    fov_degrees, camera_radius: the pinhole camera (12°, 1).
    manifold_hidden: width of the manifold predictor (128).
    radiance_hidden: width of the radiance trunk and its mapping network (256).
    deform_hidden: width of F and its mapping network (128).
    deform_zero_channels, deform_output_dim: F's released I/O layout (4, 7).
    deform_final_bias_init: 'zeros' (Δ ≡ 0 at init) or 'torch' (released init).
    deform_exp_scale: z_exp's factor at F's mapping network (1: released; `DeformationField`),
      or at the radiance mapping network when `expression` is 'template'.
    expression: where z_exp enters: 'deformation' (AniFaceGAN: F warps the template, whose
      mapping network reads cat(z_id, ε)) or 'template' (the paper's DiscoFaceGRAM baseline: no
      deformation field, Δ ≡ 0 and no 'deformation' parameters; the radiance mapping network
      reads cat(z_id, deform_exp_scale · z_exp, ε), so an expression can only repaint the
      manifolds, which carry no latent). Truncation (ψ) then also pulls the expression's part of
      the radiance codes towards their mean.
    depth_gradient: let the compositing distances z carry gradient back through the crossing
      points into the manifold predictor. GRAM and the released AniFaceGAN compute z without
      gradient (SPEC §2.5), the default; True exists for the ablation in BENCHMARKS.md, where a
      depth loss (L_Ch) pulling on z drifts every manifold out of the sampled range.
    sine: the sine of every FiLM-SIREN layer: 'xla' (jnp.sin), 'polynomial' (elementwise
      arithmetic, within 2e-7 of it and ≈ 4× faster on the CPU), 'auto' (the default: the
      polynomial on the CPU, jnp.sin elsewhere; `layers.sine_function`).
    precision: the matmuls of all four networks (`layers.PRECISIONS`, `layers.matmul`):
      'default' (XLA's default for float32, what every run so far used), 'float32', 'tf32',
      'bfloat16' (operands rounded, float32 accumulation); parameters stay float32.
  """

  warp: str = "single"
  crossing: str = "decreasing"
  min_gap: float = 0.05
  num_samples: int = 64
  near: float = 0.88
  far: float = 1.12
  num_levels: int = 23
  levels_start: float = 23.0
  levels_end: float = 8.0
  background_z: float = -0.12
  delta: float = 0.04
  white_background: bool = False
  fov_degrees: float = 12.0
  camera_radius: float = 1.0
  manifold_hidden: int = 128
  radiance_hidden: int = 256
  deform_hidden: int = 128
  deform_zero_channels: int = 4
  deform_output_dim: int = 7
  deform_final_bias_init: str = "zeros"
  deform_exp_scale: float = 1.0
  expression: str = "deformation"
  depth_gradient: bool = False
  sine: str = "auto"
  precision: str = "default"

  def setup(self):
    if self.warp not in WARP_MODES:
      raise ValueError(f"warp must be one of {WARP_MODES}, got {self.warp!r}")
    if self.expression not in EXPRESSION_MODES:
      raise ValueError(f"model.expression must be one of {EXPRESSION_MODES} (where z_exp enters), "
                       f"got {self.expression!r}")
    if not self.deform_exp_scale > 0:  # also NaN
      raise ValueError("model.deform_exp_scale must be > 0 (1: the released network), got "
                       f"{self.deform_exp_scale}")
    if self.sine not in SINES:
      raise ValueError(f"model.sine must be one of {SINES}, got {self.sine!r}")
    check_precision(self.precision)
    self.manifold = ManifoldPredictor(hidden=self.manifold_hidden, precision=self.precision)
    self.mapping = MappingNetwork(hidden=self.radiance_hidden, num_film=9,
                                  film_width=self.radiance_hidden, precision=self.precision)
    self.radiance = RadianceNet(hidden=self.radiance_hidden, sine=self.sine,
                                precision=self.precision)
    if self.has_deformation:
      self.deformation = DeformationField(
          hidden=self.deform_hidden, zero_channels=self.deform_zero_channels,
          output_dim=self.deform_output_dim, final_bias_init=self.deform_final_bias_init,
          exp_scale=self.deform_exp_scale, sine=self.sine, precision=self.precision)

  @property
  def has_deformation(self) -> bool:
    """Whether the model has the deformation field F (`expression` = 'deformation')."""
    return self.expression == "deformation"

  def mapping_input(self, z_id: Array, z_exp: Array, noise: Array) -> Array:
    """What the radiance mapping network reads: cat(z_id, ε), or cat(z_id, s·z_exp, ε) when the
    expression conditions the template (`expression` = 'template')."""
    if self.has_deformation:
      return jnp.concatenate([z_id, noise], axis=-1)
    return jnp.concatenate([z_id, self.deform_exp_scale * z_exp, noise], axis=-1)

  def codes(self, latents: Latents) -> Codes:
    """Both mapping networks: radiance from `mapping_input`, deformation from cat(z_id, z_exp)
    (without a deformation field its codes are empty: (..., 0, deform_hidden))."""
    freq, phase = self.mapping(self.mapping_input(latents.z_id, latents.z_exp, latents.noise))
    if self.has_deformation:
      deform_freq, deform_phase = self.deformation.code(latents.z_id, latents.z_exp)
    else:
      deform_freq = deform_phase = jnp.zeros(latents.z_id.shape[:-1] + (0, self.deform_hidden),
                                             freq.dtype)
    return Codes(radiance_freq=freq, radiance_phase=phase,
                 deform_freq=deform_freq, deform_phase=deform_phase)

  def deform(self, x: Array, codes: Codes) -> Array:
    """Δ (..., 3) at target points x (..., 3), world units, for one image's codes (0 without a
    deformation field)."""
    if not self.has_deformation:
      return jnp.zeros_like(x)
    return self.deformation(x, codes.deform_freq, codes.deform_phase)

  def trace_rays(self, codes: Codes, rays: Rays, lock_view: bool = False) -> TracedRays:
    """Deform C rays' samples, intersect them with the manifolds: everything but the radiance."""
    distances = camera_lib.sample_distances(self.near, self.far, self.num_samples)
    x_t = camera_lib.sample_points(rays, distances)  # (C, S, 3)
    delta = self.deform(x_t, codes)
    manifold_in = x_t * BOX_WARP + delta if self.warp == "double" else x_t + delta
    s = self.manifold(manifold_in)  # (C, S)
    levels = manifold_levels(self.levels_start, self.levels_end, self.num_levels)
    crossings = functools.partial(first_crossings, levels=levels, crossing=self.crossing,
                                  min_gap=self.min_gap)
    index, fraction, valid = jax.vmap(crossings)(s)
    x_star = jax.vmap(interpolate_at)(x_t, index, fraction)  # (C, L, 3)
    delta_star = jax.vmap(interpolate_at)(delta, index, fraction)
    background = camera_lib.background_points(rays, self.background_z)[:, None, :]
    points_target = jnp.concatenate([x_star, background], axis=1)  # (C, P, 3)
    points_canonical = jnp.concatenate([x_star + delta_star, background], axis=1)
    valid = jnp.concatenate([valid, jnp.ones_like(valid[:, :1])], axis=1)
    if lock_view:
      directions = jnp.broadcast_to(jnp.asarray(LOCKED_VIEW_DIRECTION, x_t.dtype),
                                    rays.directions.shape)
    else:
      directions = rays.directions
    z = jnp.linalg.norm(points_target - rays.origins[:, None, :], axis=-1)
    if not self.depth_gradient:
      z = jax.lax.stop_gradient(z)
    return TracedRays(points_target=points_target, points_canonical=points_canonical,
                      valid=valid, directions=directions, distances=z)

  def shade(self, codes: Codes, points: Array, directions: Array) -> tuple[Array, Array]:
    """Radiance (rgb (..., 3), σ_raw (...)) at canonical `points` (..., 3) of one image."""
    return self.radiance(points, directions, codes.radiance_freq, codes.radiance_phase)

  def composite(self, traced: TracedRays, rgb: Array, sigma_raw: Array) -> RayOutput:
    """Composite C traced rays given the radiance (C, P, 3), (C, P) at their points."""
    num_points = traced.points_target.shape[1]
    is_background = jnp.arange(num_points) == num_points - 1
    composite = functools.partial(composite_ray, is_background=is_background, delta=self.delta,
                                  white_background=self.white_background)
    pixel, depth, weights = jax.vmap(composite)(rgb, sigma_raw, traced.distances, traced.valid)
    return RayOutput(pixel=pixel, depth=depth, weights=weights,
                     points_target=traced.points_target,
                     points_canonical=traced.points_canonical, valid=traced.valid)

  def render_rays(self, codes: Codes, rays: Rays, lock_view: bool = False) -> RayOutput:
    """Render C rays (origins, directions (C, 3), world) of one image with its `codes`."""
    traced = self.trace_rays(codes, rays, lock_view)
    rgb, sigma_raw = self.shade(codes, traced.points_canonical, traced.directions[:, None, :])
    return self.composite(traced, rgb, sigma_raw)

  def __call__(self, latents: Latents, rays: Rays) -> RayOutput:
    """Unbatched latents (80,), (64,), (80,) and rays (C, 3): used by `init`."""
    return self.render_rays(self.codes(latents), rays)


@functools.partial(jax.jit, static_argnums=0)
def init_generator(model: AnimatableGenerator, key: PRNGKey) -> PyTree:
  """Initial variables {'params': {'manifold', 'mapping', 'radiance', 'deformation'}} (no
  'deformation' when the model has no deformation field); one compiled call, the same values as
  op by op (`layers`' initialisers are unfused)."""
  latents = jax.tree_util.tree_map(lambda x: x[0], Latents.dummy(1))
  return model.init(key, latents, Rays.dummy(2))


def truncate(codes: Codes, mean_freq: Array, mean_phase: Array, psi: float | Array) -> Codes:
  """Truncation trick on the radiance codes only: mean + ψ·(code − mean) (SPEC §2.6)."""
  return codes.replace(
      radiance_freq=mean_freq + psi * (codes.radiance_freq - mean_freq),
      radiance_phase=mean_phase + psi * (codes.radiance_phase - mean_phase))


def mean_radiance_codes(model: AnimatableGenerator, variables: PyTree, key: PRNGKey,
                        sample_z_id: Callable[[PRNGKey, int], Array] | None = None,
                        num: int = 10_000,
                        sample_z_exp: Callable[[PRNGKey, int], Array] | None = None,
                        ) -> tuple[Array, Array]:
  """Mean radiance (freq, phase), each (9, hidden), over `num` codes of the mapping network's
  input (`AnimatableGenerator.mapping_input`).

  z_id comes from `sample_z_id(key, num)` (the identity prior; default N(0, I)), ε ~ N(0, I);
  z_exp, read only when the expression conditions the template, from `sample_z_exp` (default
  N(0, I)).
  """
  key_id, key_noise = jax.random.split(key)
  z_id = (sample_z_id(key_id, num) if sample_z_id is not None
          else jax.random.normal(key_id, (num, 80), jnp.float32))
  noise = jax.random.normal(key_noise, (num, 80), jnp.float32)
  if model.expression == "deformation":
    z_exp = jnp.zeros((num, 64), jnp.float32)  # not read
  else:
    key_exp = jax.random.fold_in(key, 2)
    z_exp = (sample_z_exp(key_exp, num) if sample_z_exp is not None
             else jax.random.normal(key_exp, (num, 64), jnp.float32))
  freq, phase = model.apply(variables, z_id, z_exp, noise,
                            method=lambda m, i, e, n: m.mapping(m.mapping_input(i, e, n)))
  return freq.mean(axis=0), phase.mean(axis=0)


CPU_CHUNK_SIZE = 256  # rays per chunk whose activations stay in a CPU's cache
ACCELERATOR_CHUNK_SIZE = 4096


def default_chunk_size() -> int:
  """Rays per `lax.map` step when `render` is given chunk_size ≤ 0: 256 on the CPU, where the
  backward pass of 4,096-ray chunks is bound by memory traffic (≈ 1.7 × slower at 64²,
  BENCHMARKS.md "Speed"), 4,096 on accelerators, which want the parallelism."""
  return CPU_CHUNK_SIZE if jax.default_backend() == "cpu" else ACCELERATOR_CHUNK_SIZE


def default_skip_invalid(remat: bool = False) -> bool:
  """Whether `render(skip_invalid=None)` skips the radiance at invalid points: for forward
  renders on the CPU (no `remat`), where it is measured faster. Not under `remat` (a backward
  pass follows), where it is measured slower, nor on accelerators until measured there
  (BENCHMARKS.md, "Speed")."""
  return jax.default_backend() == "cpu" and not remat


@jax.custom_vjp
def _permute(x: Array, order: Array, inverse: Array) -> Array:
  """x (B, n, ...) reordered along axis 1 by the permutations `order` (B, n), whose inverses are
  `inverse`; its gradient is the inverse reordering (a gather, where the generic gradient of a
  gather is a scatter-add, slow on the CPU)."""
  return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)


def _permute_fwd(x, order, inverse):
  return _permute(x, order, inverse), (order, inverse)


def _permute_bwd(residuals, g):
  order, inverse = residuals
  return _permute(g, inverse, order), None, None


_permute.defvjp(_permute_fwd, _permute_bwd)


def shade_valid(model: AnimatableGenerator, variables: PyTree, codes: Codes, traced: TracedRays,
                mask: Array, block: int, remat: bool = False) -> tuple[Array, Array]:
  """The radiance (B, N, P, 3), (B, N, P) at traced rays (leaves (B, N, ...)), computed only at
  the points where `mask` (B, N, P) is set.

  The radiance at an invalid point is multiplied by α = 0 when compositing (value and gradient),
  so with mask = valid the image does not change. Each image's points are reordered
  masked-first and shaded in blocks of `block`; a block in which no image has a masked point is
  skipped (`lax.cond`, also in the backward pass) and its radiance left at 0. The shaded points'
  values are those of shading every point.
  """
  batch, num_rays, num_points = mask.shape
  n = num_rays * num_points
  num_blocks = -(-n // block)
  mask = mask.reshape(batch, n)
  # Masked points first, each group in its original order: point i goes to position inverse[i]
  # (cumulative counts, cheaper on the CPU than a sort); order is that permutation's inverse.
  count = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)
  inverse = jnp.where(mask, jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1,
                      count + jnp.cumsum(jnp.logical_not(mask), axis=-1, dtype=jnp.int32) - 1)
  order = jax.vmap(lambda p: jnp.zeros_like(p).at[p].set(jnp.arange(n, dtype=p.dtype),
                                                          unique_indices=True))(inverse)
  directions = jnp.broadcast_to(traced.directions[:, :, None, :], traced.points_canonical.shape)

  def blocks(x):  # (B, N, P, 3) → (num_blocks, B, block, 3) in masked-first order
    x = _permute(x.reshape(batch, n, 3), order, inverse)
    x = jnp.pad(x, ((0, 0), (0, num_blocks * block - n), (0, 0)))
    return jnp.swapaxes(x.reshape(batch, num_blocks, block, 3), 0, 1)

  needed = jnp.max(count)  # masked points of the fullest image
  shade = jax.vmap(lambda c, p, d: model.apply(variables, c, p, d,
                                               method=AnimatableGenerator.shade))
  if remat:
    shade = jax.checkpoint(shade)

  def one_block(args):
    first, points, dirs = args
    skip = lambda: (jnp.zeros(points.shape, points.dtype),
                    jnp.zeros(points.shape[:-1], points.dtype))
    return jax.lax.cond(first < needed, lambda: shade(codes, points, dirs), skip)

  starts = jnp.arange(num_blocks, dtype=needed.dtype) * block
  rgb, sigma = jax.lax.map(one_block, (starts, blocks(traced.points_canonical),
                                       blocks(directions)))

  def unblock(x):  # (num_blocks, B, block, ...) → (B, N, P, ...) in the original order
    x = jnp.swapaxes(x, 0, 1).reshape((batch, num_blocks * block) + x.shape[3:])[:, :n]
    x = _permute(x, inverse, order)
    return x.reshape((batch, num_rays, num_points) + x.shape[2:])

  return unblock(rgb), unblock(sigma)


def _chunk_rays(rays: Rays, chunk: int) -> tuple[Rays, int]:
  """(B, N, 3) → (num_chunks, B, chunk, 3), padding N with copies of the last ray."""
  num = rays.origins.shape[1]
  padded = -(-num // chunk) * chunk

  def split(x):
    x = jnp.pad(x, ((0, 0), (0, padded - num), (0, 0)), mode="edge")
    return jnp.swapaxes(x.reshape(x.shape[0], padded // chunk, chunk, 3), 0, 1)

  return jax.tree_util.tree_map(split, rays), num


def render(model: AnimatableGenerator, variables: PyTree, latents: Latents, camera: Camera, *,
           resolution: int, chunk_size: int = 0, lock_view: bool = False,
           psi: float = 1.0, mean_codes: tuple[Array, Array] | None = None,
           remat: bool = False, skip_invalid: bool | None = None) -> RenderOutput:
  """Render a batch of images (pure; jit with `resolution` etc. static).

  Args:
    model: the generator definition.
    variables: its variables.
    latents: batched Latents, leading dim B.
    camera: (B,) poses.
    resolution: R, images are R × R.
    chunk_size: rays per `lax.map` step per image; ≤ 0: `default_chunk_size()`.
    lock_view: replace every view direction by (0, 0, −1) (rendering / FID protocol).
    psi: truncation ψ; needs `mean_codes` when ≠ 1. A traced ψ (one compilation for every ψ,
      as the viewer's) always truncates, so it needs `mean_codes` too.
    mean_codes: (freq, phase) from `mean_radiance_codes`.
    remat: rematerialise each chunk in the backward pass (`jax.checkpoint`), for training.
    skip_invalid: run the radiance net only at valid points (`shade_valid`, in blocks of a
      chunk's points; the same image), after tracing every chunk; None:
      `default_skip_invalid(remat)`.

  Returns:
    RenderOutput with image (B, R, R, 3) in [−1, 1].
  """
  codes = model.apply(variables, latents, method=AnimatableGenerator.codes)
  if not (isinstance(psi, (int, float)) and psi == 1.0):
    if mean_codes is None:
      raise ValueError("render(psi != 1, or a traced psi) needs mean_codes from "
                       "mean_radiance_codes()")
    codes = truncate(codes, *mean_codes, psi)
  rays = camera_lib.generate_rays(camera, resolution, model.fov_degrees, model.camera_radius)
  chunk_size = chunk_size if chunk_size > 0 else default_chunk_size()
  chunks, num_rays = _chunk_rays(rays, min(chunk_size, resolution * resolution))

  skip_invalid = default_skip_invalid(remat) if skip_invalid is None else skip_invalid

  def over_chunks(method):  # `method` of every chunk's rays → leaves (B, num_chunks · chunk, ...)
    def one_chunk(ray_chunk: Rays):
      per_image = lambda c, r: model.apply(variables, c, r, lock_view, method=method)
      return jax.vmap(per_image)(codes, ray_chunk)

    out = jax.lax.map(jax.checkpoint(one_chunk) if remat else one_chunk, chunks)
    return jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:]), out)

  if skip_invalid:
    traced = over_chunks(AnimatableGenerator.trace_rays)
    real = jnp.arange(traced.valid.shape[1]) < num_rays  # not a padding copy
    rgb, sigma = shade_valid(model, variables, codes, traced, traced.valid & real[:, None],
                             block=chunks.origins.shape[2] * traced.valid.shape[2], remat=remat)
    composite = lambda t, c, s: model.apply(variables, t, c, s,
                                            method=AnimatableGenerator.composite)
    out = jax.vmap(composite)(traced, rgb, sigma)
  else:
    out = over_chunks(AnimatableGenerator.render_rays)
  out = jax.tree_util.tree_map(lambda x: x[:, :num_rays], out)
  batch = latents.z_id.shape[0]
  return RenderOutput(
      image=out.pixel.reshape(batch, resolution, resolution, 3) * 2.0 - 1.0,
      depth=out.depth.reshape(batch, resolution, resolution),
      weights=out.weights, points_target=out.points_target,
      points_canonical=out.points_canonical, valid=out.valid)


def manifold_health(out: RenderOutput) -> tuple[Array, Array]:
  """(B,) fraction of ray-manifold crossings found and (B,) mean manifold opacity (1 − the
  background weight) of a rendered batch; both 0 when the faces sit on the background plane."""
  crossings = jnp.mean(out.valid[..., :-1].astype(jnp.float32), axis=(1, 2))
  return crossings, jnp.mean(1.0 - out.weights[..., -1], axis=1)
