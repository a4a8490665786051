"""SynthFaces scenes: faces of the embedded procedural 3DMM rendered with the GRAM camera, with
their ground-truth coefficients, poses and 68 landmarks (numpy only; the tfds builder is
`data/synthface.py`).

Every example is drawn from its own generator seeded by (split, index), so a dataset is the same on
every machine, and each is an independent sample of the documented scene prior:
  * identity β ~ N(0, I)·0.8, texture ~ N(0, I)·0.5 (the procedural bases are scaled for N(0, I));
  * expression γ from `procedural.sample_expressions` (sparse named blendshapes, neutral = 0);
  * pose from the training camera prior: θ ~ N(π/2, 0.3²), φ ~ N(π/2, 0.155²), clamped to ±1.3;
  * lighting: Deep3DFaceRecon SH `gamma` (27) with a random ambient level, a mostly white
    directional term and a small colour tint, fixed to the head;
  * head shell, hair, neck and ears (`synthfaces.scene`), a random background.
The face is placed in GRAM world by `geometry.model_to_world` (×0.1, Rx(0.1), no translation);
the stored coefficients are (id | exp | tex | angle | gamma | trans) with angle = the camera pose
converted by `geometry.camera_to_angles` and trans = 0.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import numpy as np

from anifacegan_jax.face3d.morphable import MorphableModel
from anifacegan_jax.synthfaces import procedural, raster, scene
from anifacegan_jax.types import Mesh

SEED = 20221006  # AniFaceGAN's arXiv date; the root of every example's generator
SPLIT_CODES = {"train": 0, "test": 1}
ID_SCALE, TEX_SCALE = 0.8, 0.5
PITCH_OFFSET = 0.1  # radians, as geometry.PITCH_OFFSET (kept numpy-side: no jax in the builder)


@dataclasses.dataclass(frozen=True)
class SceneParams:
  """The random draw behind one example (coefficients in the model's units, pose in radians)."""

  identity: np.ndarray  # (80,)
  expression: np.ndarray  # (64,)
  texture: np.ndarray  # (80,)
  gamma: np.ndarray  # (27,)
  pitch: float
  yaw: float


def sample_lighting(rng: np.random.Generator) -> np.ndarray:
  """(27,) SH lighting: ambient level, mostly white first-order light, small tint, weak 2nd order."""
  gamma = np.zeros((3, 9))
  gamma[:, 0] = rng.uniform(-0.1, 0.3) + rng.normal(0.0, 0.03, 3)
  gamma[:, 1:4] = rng.normal(0.0, 0.1, 3)[None] + rng.normal(0.0, 0.015, (3, 3))
  gamma[:, 4:] = rng.normal(0.0, 0.03, 5)[None]
  return gamma.reshape(27).astype(np.float32)


def sample_scene(rng: np.random.Generator, yaw_std: float = 0.3, pitch_std: float = 0.155,
                 clamp: float = 1.3) -> SceneParams:
  """One draw of the scene prior (see the module docstring)."""
  identity = (ID_SCALE * rng.standard_normal(80)).astype(np.float32)
  expression = procedural.sample_expressions(rng, 1)[0].astype(np.float32)
  texture = (TEX_SCALE * rng.standard_normal(80)).astype(np.float32)
  gamma = sample_lighting(rng)
  yaw = float(np.clip(math.pi / 2 + yaw_std * rng.standard_normal(), math.pi / 2 - clamp,
                      math.pi / 2 + clamp))
  pitch = float(np.clip(math.pi / 2 + pitch_std * rng.standard_normal(), math.pi / 2 - clamp,
                        math.pi / 2 + clamp))
  return SceneParams(identity, expression, texture, gamma, pitch, yaw)


def model_to_world(vertices: np.ndarray) -> np.ndarray:
  """numpy twin of geometry.model_to_world with its defaults: 0.1·Rx(0.1)·v."""
  c, s = math.cos(PITCH_OFFSET), math.sin(PITCH_OFFSET)
  rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
  return 0.1 * np.asarray(vertices, np.float64) @ rx.T


def face_mesh(model: MorphableModel, params: SceneParams) -> tuple[Mesh, np.ndarray]:
  """The face (world units, albedo colours) and its 68 landmarks (68, 3) in world units (Eq. 1)."""
  shape = (model.mean_shape + model.id_basis @ params.identity
           + model.exp_basis @ params.expression)
  albedo = np.clip(model.mean_tex + model.tex_basis @ params.texture, 0.0, 1.0)
  world = model_to_world(shape)
  return Mesh(world, model.triangles, albedo), world[model.landmarks]


def angles_from_camera(pitch: float, yaw: float) -> np.ndarray:
  """numpy twin of geometry.camera_to_angles: (ax, ay, az) = (π/2 − φ + 0.1, θ − π/2, 0)."""
  return np.array([math.pi / 2 - pitch + PITCH_OFFSET, yaw - math.pi / 2, 0.0], np.float32)


def render_example(model: MorphableModel, params: SceneParams, rng: np.random.Generator,
                   resolution: int) -> dict:
  """Render one scene; returns the schema's fields (image uint8, pose, coefficients, landmarks)."""
  face, landmarks_world = face_mesh(model, params)
  rear = face.vertices[:, 2] <= np.quantile(face.vertices[:, 2], 0.1)
  skin = np.median(face.colors[rear], axis=0)
  meshes = scene.shade([face] + scene.head_mesh(face.vertices, rng, skin_albedo=skin),
                       params.gamma)
  background = scene.random_background(rng, resolution)
  supersample = int(min(4, max(2, 128 // resolution)))
  result = raster.render(meshes, params.pitch, params.yaw, resolution, background,
                         supersample=supersample)
  landmarks, _ = raster.project_points(landmarks_world, params.pitch, params.yaw, resolution)
  coefficients = np.concatenate([params.identity, params.expression, params.texture,
                                 angles_from_camera(params.pitch, params.yaw), params.gamma,
                                 np.zeros(3, np.float32)]).astype(np.float32)
  return dict(image=np.round(result.image * 255).astype(np.uint8),
              pose=np.array([params.pitch, params.yaw], np.float32),
              coefficients=coefficients, landmarks=landmarks.astype(np.float32))


def generate(model: MorphableModel, split: str, index: int, resolution: int) -> dict:
  """Example `index` of `split`, deterministic."""
  rng = np.random.default_rng([SEED, SPLIT_CODES[split], index])
  return render_example(model, sample_scene(rng), rng, resolution)


_WORKER_MODEL: MorphableModel | None = None


def _init_worker() -> None:
  global _WORKER_MODEL
  _WORKER_MODEL = procedural.load_procedural()  # from the cache the parent filled


def _generate_in_worker(task: tuple[str, int, int]) -> dict:
  return generate(_WORKER_MODEL, *task)


def generate_many(split: str, num: int, resolution: int, workers: int | None = None) -> dict:
  """Examples 0..num-1 of `split` rendered by `workers` processes (default: every core), stacked:
  {'image': uint8 (num, R, R, 3), 'pose': (num, 2), 'coefficients': (num, 257), 'landmarks'}.
  The same examples the tfds builder stores, without tfds (e.g. on an accelerator image)."""
  procedural.load_procedural()  # build and cache the model once, before the workers start
  tasks = [(split, i, resolution) for i in range(num)]
  # 'spawn': forking a process whose JAX runtime has threads can deadlock. The workers render
  # with numpy; JAX_PLATFORMS=cpu keeps any of them from claiming accelerator memory.
  previous = os.environ.get("JAX_PLATFORMS")
  os.environ["JAX_PLATFORMS"] = "cpu"
  try:
    with multiprocessing.get_context("spawn").Pool(workers or os.cpu_count(),
                                                   initializer=_init_worker) as pool:
      examples = pool.map(_generate_in_worker, tasks, chunksize=32)
  finally:
    if previous is None:
      os.environ.pop("JAX_PLATFORMS")
    else:
      os.environ["JAX_PLATFORMS"] = previous
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}
