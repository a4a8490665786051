"""The one render loop of the evaluation metrics.

Every metric renders the generator with the evaluation protocol (ψ as given by the latents, view
direction locked: SPEC §5.4) over N given latents and cameras, in padded batches spread over the
local devices, and reduces each batch on the device with a function of its own
(`read(out, latents, camera) -> {name: (B, ...) array}`: the image as uint8-ready floats, a
reconstruction network's coefficients, manifold health, landmark depth errors, ...). The result
for image i depends only on image i: neither the batch size nor the number of devices changes it.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from anifacegan_jax.models.generator import AnimatableGenerator, render
from anifacegan_jax.types import Array, Camera, Latents, PyTree, RenderOutput

Read = Callable[[RenderOutput, Latents, Camera], dict[str, Array]]


def render_protocol(generator: AnimatableGenerator, variables: PyTree, latents: Latents,
                    camera: Camera, *, resolution: int, chunk_size: int) -> RenderOutput:
  """The evaluation render of a batch: view direction locked (SPEC §5.4)."""
  return render(generator, variables, latents, camera, resolution=resolution,
                chunk_size=chunk_size, lock_view=True)


def image_01(image: Array) -> Array:
  """A rendered image in [-1, 1] (unclipped) as the [0, 1] input of a reconstruction network."""
  return (jnp.clip(image, -1.0, 1.0) + 1.0) / 2.0


@functools.lru_cache(maxsize=8)
def _pmapped(generator: AnimatableGenerator, read: Read, resolution: int, chunk_size: int):
  """The pmapped render + `read` of one call, compiled once per (generator, read, sizes): a
  metric that renders several sets with the same `read` (DS, consistency) compiles once."""
  def one(variables, latents, camera):
    out = render_protocol(generator, variables, latents, camera, resolution=resolution,
                          chunk_size=chunk_size)
    return read(out, latents, camera)
  return jax.pmap(one, in_axes=(None, 0, 0))


def in_batches(generator: AnimatableGenerator, variables: PyTree, latents: Latents,
               camera: Camera, read: Read, *, resolution: int, chunk_size: int,
               batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """`read` of the renders of (N,) latents and cameras, in order, one host batch at a time.

  Args:
    generator, variables: the generator and its variables {'params': ...}.
    latents, camera: (N,) per image.
    read: (RenderOutput, Latents, Camera) of one device batch -> {name: (B, ...)}; traced.
    resolution, chunk_size: the render's size and rays per chunk.
    batch_size: images per device per call (fewer when N is small, so that a few images do not
      render a full batch on every device).

  Yields:
    {name: (n, ...) numpy} for consecutive images; the last batch's padding (repeats) dropped.
  """
  num = int(camera.yaw.shape[0])
  devices = jax.local_device_count()
  per_device = max(1, min(int(batch_size), -(-num // devices)))
  per_call = per_device * devices

  step = _pmapped(generator, read, resolution, chunk_size)
  for start in range(0, num, per_call):
    count = min(per_call, num - start)
    index = np.arange(start, start + per_call) % num  # pad the last call with repeats
    split = lambda x: x[index].reshape((devices, per_device) + x.shape[1:])  # noqa: E731
    out = step(variables, jax.tree_util.tree_map(split, latents),
               jax.tree_util.tree_map(split, camera))
    yield {name: np.asarray(value).reshape((per_call,) + value.shape[2:])[:count]
           for name, value in out.items()}


def gather(generator: AnimatableGenerator, variables: PyTree, latents: Latents, camera: Camera,
           read: Read, **kwargs) -> dict[str, np.ndarray]:
  """`in_batches`, concatenated: {name: (N, ...)}."""
  parts = list(in_batches(generator, variables, latents, camera, read, **kwargs))
  return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
