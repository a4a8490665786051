"""Side-by-side speed of this generator and the official AniFaceGAN PyTorch code on one machine.

  python benchmarks/peers.py --official_dir=/path/to/AniFaceGAN --out=benchmarks/peers_cpu.json

The official code is imported from --official_dir (a checkout of github.com/YueWuHKUST/AniFaceGAN;
nothing of it is copied here) and built as its render.py builds it: curriculum
SPATIALSIRENBASELINEGRAM_deform, ImplicitGenerator3d with SPATIALSIRENMULTI_NEW and
SPATIALSAMPLERELU, the deformation net SPATIAL_SIREN_DEFORM(input_dim=7, z_dim=144,
output_dim=7), random init, on the CPU. Both sides render 64 samples per ray, 23 manifold levels
plus the background plane, a frontal camera, ψ = 1, no view lock, black background.

Cases (--cases):
  render64   1 image at 64², forward only (official: staged_forward's path under torch.no_grad,
             codes from the mapping network then `generate_points` and `forward(freq=, phase=)`;
             ours: the jitted `render`).
  train64    batch 2 at 64², loss = mean(image), gradient w.r.t. every generator and deformation
             parameter (official: `forward` without precomputed codes, as training calls it, then
             `loss.backward()`; ours: jitted `jax.grad`, chunks rematerialised with --remat).
  render128  1 image at 128², forward only.

Each of --rounds rounds times both implementations, the order alternating between rounds: one
warm-up call then --repeats timed calls (ours waited for with `block_until_ready`). Reported per
case: the median seconds per call of each side per round and over all rounds, official/ours (> 1:
ours is faster), our compile time (first call minus the steady median), official's first call,
and achieved GFLOP/s from the SPEC's count of 34.5 MFLOP per ray forward (deformation 4.50 M +
manifold net 4.28 M + radiance 25.7 M; × 3 for forward + backward; rays = R² × batch), also as a
fraction of the machine's float32 matmul peak (2048² jitted `jnp.dot`, median of 10; torch's
`torch.mm` is measured too). Prints a Markdown table and writes a JSON record to --out.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import pathlib
import platform
import statistics
import sys
import time
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anifacegan_jax.models.generator import AnimatableGenerator, init_generator, render  # noqa: E402
from anifacegan_jax.models.layers import SINES  # noqa: E402
from anifacegan_jax.types import Camera, Latents  # noqa: E402
from records import write_record  # noqa: E402  (benchmarks/, beside this script)

# SPEC FLOPs per ray, forward: deformation 4.50 M + manifold net 4.28 M + radiance 25.7 M.
FORWARD_FLOP_PER_RAY = 34.5e6
BACKWARD_FACTOR = 3.0  # forward + backward ≈ 3 × forward
CASES = {
    "render64": dict(resolution=64, batch=1, train=False),
    "train64": dict(resolution=64, batch=2, train=True),
    "render128": dict(resolution=128, batch=1, train=False),
}
OFFICIAL_FILES = ("curriculums.py", "generators/generators_MPI_learn_hd.py",
                  "generators/volumetric_rendering_MPI_learn.py", "siren/siren.py")
# Imported by the official modules at the top but never used on the timed paths.
OPTIONAL_IMPORTS = ("matplotlib", "matplotlib.pyplot")
MATMUL_SIZE = 2048
MATMUL_REPEATS = 10


# ----------------------------------------------------------------------------- official side

def load_official(path: str) -> tuple[types.SimpleNamespace, list[str]]:
  """The official modules (curriculums, generators, siren) imported from `path`, and a list of
  what had to be patched around to import / run them on the CPU."""
  root = pathlib.Path(path).expanduser().resolve()
  if not root.is_dir():
    raise SystemExit(f"--official_dir={path}: no such directory")
  missing = [f for f in OFFICIAL_FILES if not (root / f).is_file()]
  if missing:
    raise SystemExit(f"--official_dir={path} is not the official AniFaceGAN layout (missing "
                     f"{', '.join(missing)}); pass a checkout of github.com/YueWuHKUST/AniFaceGAN")
  clashes = [n for n in ("curriculums", "generators", "siren") if n in sys.modules]
  if clashes:
    raise SystemExit(f"modules {clashes} are already imported; cannot import the official ones")
  patches, stubs = [], []
  for name in OPTIONAL_IMPORTS:
    try:
      importlib.import_module(name)
    except ImportError:
      sys.modules[name] = types.ModuleType(name)
      stubs.append(name)
  if stubs:
    if "matplotlib.pyplot" in stubs and "matplotlib" in stubs:
      sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    patches.append(f"empty stub modules for {', '.join(stubs)} (imported at the top of "
                   "generators/volumetric_rendering_MPI_learn.py, never called on the timed paths)")
  sys.path.insert(0, str(root))
  try:
    curriculums = importlib.import_module("curriculums")
    generators = importlib.import_module("generators.generators_MPI_learn_hd")
    siren = importlib.import_module("siren.siren")
  finally:
    sys.path.remove(str(root))
    for name in stubs:
      del sys.modules[name]
  import torch
  cpu = torch.device("cpu")
  rendering = sys.modules["generators.volumetric_rendering_MPI_learn"]
  for module in (curriculums, generators, siren, rendering):
    if isinstance(getattr(module, "device", None), torch.device):
      module.device = cpu
      patches.append(f"{module.__name__}.device set to cpu")
  return types.SimpleNamespace(curriculums=curriculums, generators=generators, siren=siren), patches


class Official:
  """The official generator + deformation net for one case, random init, on the CPU."""

  def __init__(self, modules, resolution: int, batch: int, seed: int = 0):
    import torch
    self.torch = torch
    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    curriculum = modules.curriculums.SPATIALSIRENBASELINEGRAM_deform
    metadata = modules.curriculums.extract_metadata(curriculum, 0)
    # render.py's options_dict, at this case's resolution, ψ = 1, no view lock, frontal camera.
    metadata.update(img_size=resolution, num_steps=24, batch_split=1, psi=1.0, sample_dist="gaussian",
                    h_stddev=0.0, v_stddev=0.0, h_mean=math.pi / 2, v_mean=math.pi / 2,
                    lock_view_dependence=False, white_back=False, last_back=False, nerf_noise=0,
                    delta_final=1e10, use_alpha=True, clamp_mode="softplus",
                    rgb_clamp_mode="widen_sigmoid")
    self.metadata = metadata
    core = getattr(modules.siren, metadata["model"])
    self.generator = getattr(modules.generators, metadata["generator"])(
        core, metadata["latent_dim"], **metadata).to(cpu)
    self.generator.set_device(cpu)
    self.deform = modules.siren.SPATIAL_SIREN_DEFORM(input_dim=7, z_dim=64 + 80, output_dim=7).to(cpu)
    self.z_id = torch.randn(batch, 80)
    self.z_exp = torch.randn(batch, 64)
    self.noise = torch.randn(batch, 80)
    self.cpu = cpu
    self.batch = batch

  def _points(self):
    with self.torch.no_grad():
      return self.generator.generate_points(self.batch, self.cpu, **self.metadata)

  def _forward(self, freq=None, phase=None):
    points, back, levels, origins, directions, pitch, yaw, _ = self._points()
    _, output, _, _, _ = self.generator.forward(
        self.z_id, self.z_exp, self.noise, points, back, levels, origins, directions, pitch, yaw,
        False, self.deform, 1, self.metadata, freq=freq, phase=phase,
        stage_forward_flag=freq is not None)
    return output[0]  # (B, 3, R, R) in [−1, 1]

  def render(self):
    """render.py's staged_forward (batch_split 1, ψ = 1): the image (B, 3, R, R)."""
    with self.torch.no_grad():
      freq, phase = self.generator.siren.mapping_network(
          self.torch.cat([self.z_id, self.noise], dim=1))
      return self._forward(freq, phase)

  def train(self):
    """mean(image).backward() into every generator and deformation parameter; the image."""
    self.generator.zero_grad(set_to_none=True)
    self.deform.zero_grad(set_to_none=True)
    image = self._forward()
    image.mean().backward()
    return image

  def num_params(self) -> int:
    return sum(p.numel() for m in (self.generator, self.deform) for p in m.parameters())

  def grads_present(self) -> bool:
    params = [p for m in (self.generator, self.deform) for p in m.parameters()]
    return all(p.grad is not None for p in params)


# ----------------------------------------------------------------------------- our side

def ours(resolution: int, batch: int, train: bool, chunk: int, remat: bool, sine: str,
         skip_invalid: str = "auto"):
  """(the call to time, returning the image (B, R, R, 3) or the gradient pytree; parameter count)."""
  model = AnimatableGenerator(sine=sine)
  variables = init_generator(model, jax.random.key(0))
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  latents = Latents(z_id=jax.random.normal(k1, (batch, 80)), z_exp=jax.random.normal(k2, (batch, 64)),
                    noise=jax.random.normal(k3, (batch, 80)))
  camera = Camera.frontal(batch)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
  # auto: as this project runs: render's default for renders, off in the training step.
  skip = dict(on=True, off=False, auto=False if train else None)[skip_invalid]

  def image(v, l, c):  # latents and camera are arguments, not constants XLA could fold
    return render(model, v, l, c, resolution=resolution, chunk_size=chunk,
                  remat=train and remat, skip_invalid=skip).image

  if train:
    step = jax.jit(jax.grad(lambda p, l, c: jnp.mean(image({**variables, "params": p}, l, c))))
    return (lambda: jax.block_until_ready(step(variables["params"], latents, camera))), num_params
  forward = jax.jit(image)
  return (lambda: jax.block_until_ready(forward(variables, latents, camera))), num_params


def _check_ours(name: str, out, expected: tuple[int, ...], train: bool) -> str:
  """Our timed call's output is a full, finite image (or a finite gradient for every parameter)."""
  leaves = jax.tree_util.tree_leaves(out)
  finite = all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
  if train:
    nonzero = sum(bool(jnp.any(x != 0)) for x in leaves)
    if not finite:
      raise RuntimeError(f"{name}: our gradient is not finite")
    return f"gradient of {len(leaves)} arrays, {nonzero} nonzero"
  if tuple(out.shape) != expected or not finite:
    raise RuntimeError(f"{name}: our image {out.shape} (expected {expected}), finite: {finite}")
  return f"image {tuple(out.shape)}"


# ----------------------------------------------------------------------------- timing

def _time(call, repeats: int) -> tuple[float, list[float]]:
  """(warm-up call s, `repeats` timed calls s)."""
  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return first, times


def matmul_peaks() -> dict:
  """GFLOP/s of a float32 2048² matmul in JAX (jitted) and in torch, median of 10 runs each."""
  import torch
  flop = 2.0 * MATMUL_SIZE**3
  a = jax.random.normal(jax.random.key(0), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
  dot = jax.jit(jnp.dot)
  _, jax_times = _time(lambda: jax.block_until_ready(dot(a, b)), MATMUL_REPEATS)
  ta, tb = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
  _, torch_times = _time(lambda: torch.mm(ta, tb), MATMUL_REPEATS)
  return dict(size=MATMUL_SIZE, repeats=MATMUL_REPEATS,
              jax_seconds=statistics.median(jax_times), torch_seconds=statistics.median(torch_times),
              jax_gflops=flop / statistics.median(jax_times) / 1e9,
              torch_gflops=flop / statistics.median(torch_times) / 1e9)


def bench_case(name: str, modules, args, peak_gflops: float) -> dict:
  import torch
  spec = CASES[name]
  resolution, batch, train = spec["resolution"], spec["batch"], spec["train"]
  official = Official(modules, resolution, batch)
  official_call = official.train if train else official.render
  our_call, our_params = ours(resolution, batch, train, args.chunk, args.remat, args.sine,
                              args.skip_invalid)

  # What is timed really renders the full image: one checked call per side (not timed).
  check = official_call()
  official_shape = tuple(check.shape)
  official_ok = bool(torch.isfinite(check).all()) and (not train or official.grads_present())
  expected = (batch, 3, resolution, resolution)
  if official_shape != expected or not official_ok:
    raise RuntimeError(f"{name}: official output {official_shape} (expected {expected}), "
                       f"finite and with gradients: {official_ok}")
  del check
  official.generator.zero_grad(set_to_none=True)
  official.deform.zero_grad(set_to_none=True)
  print(f"{name}: official image {official_shape} ({official.num_params():,} parameters"
        f"{', all with gradients' if train else ''}); ours {our_params:,} parameters", flush=True)

  calls = {"official": official_call, "ours": our_call}
  rounds = {"official": [], "ours": []}
  first = {}
  for r in range(args.rounds):
    order = ("ours", "official") if r % 2 == 0 else ("official", "ours")
    for side in order:
      warm, times = _time(calls[side], args.repeats)
      if r == 0:
        first[side] = warm
      rounds[side].append(times)
      print(f"  round {r} {side}: warm-up {warm:.3f} s, median {statistics.median(times):.4f} s "
            f"over {len(times)}", flush=True)
  ours_output = _check_ours(name, our_call(), (batch, resolution, resolution, 3), train)
  print(f"{name}: ours {ours_output}", flush=True)

  rays = resolution * resolution * batch
  flop = FORWARD_FLOP_PER_RAY * rays * (BACKWARD_FACTOR if train else 1.0)
  record = dict(case=name, resolution=resolution, batch=batch, mode="forward+backward" if train
                else "forward", rays=rays, flop=flop)
  for side in ("official", "ours"):
    all_times = [t for times in rounds[side] for t in times]
    median = statistics.median(all_times)
    record[side] = dict(
        round_medians=[statistics.median(t) for t in rounds[side]], times=rounds[side],
        median_s=median, first_call_s=first[side], gflops=flop / median / 1e9,
        fraction_of_jax_peak=flop / median / 1e9 / peak_gflops)
  record["ours"]["compile_s"] = first["ours"] - statistics.median(rounds["ours"][0])
  record["official"]["output"] = f"image {official_shape}"
  record["ours"]["output"] = ours_output
  record["ratio_official_over_ours"] = record["official"]["median_s"] / record["ours"]["median_s"]
  record["round_ratios"] = [o / s for o, s in zip(record["official"]["round_medians"],
                                                 record["ours"]["round_medians"])]
  return record


def _table(records: list[dict], peaks: dict) -> str:
  lines = [f"float32 {MATMUL_SIZE}² matmul peak: JAX {peaks['jax_gflops']:.1f} GFLOP/s, "
           f"torch {peaks['torch_gflops']:.1f} GFLOP/s", "",
           "| case | rays | official s/call (per round) | ours s/call (per round) | official/ours | "
           "ours compile s | official 1st call s | official GFLOP/s (of peak) | "
           "ours GFLOP/s (of peak) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    o, s = r["official"], r["ours"]
    per = lambda x: " / ".join(f"{m:.3f}" for m in x["round_medians"])  # noqa: E731
    lines.append(
        f"| {r['case']} | {r['rays']:,} | {o['median_s']:.3f} ({per(o)}) | "
        f"{s['median_s']:.3f} ({per(s)}) | {r['ratio_official_over_ours']:.2f} | "
        f"{s['compile_s']:.1f} | {o['first_call_s']:.2f} | "
        f"{o['gflops']:.1f} ({o['fraction_of_jax_peak']:.0%}) | "
        f"{s['gflops']:.1f} ({s['fraction_of_jax_peak']:.0%}) |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--official_dir", required=True,
                      help="checkout of the official AniFaceGAN code (imported, never copied)")
  parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated of {list(CASES)}")
  parser.add_argument("--rounds", type=int, default=2,
                      help="rounds timing both sides, the order alternating")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed calls per side per round, after one warm-up")
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
  parser.add_argument("--chunk", type=int, default=0,
                      help="our rays per lax.map step (0: render's default, 256 on the CPU)")
  parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=True,
                      help="rematerialise our chunks in the backward pass")
  parser.add_argument("--sine", default="auto", choices=SINES,
                      help="our FiLM layers' sine (model.sine)")
  parser.add_argument("--skip_invalid", default="auto", choices=("auto", "on", "off"),
                      help="our radiance only at valid points (auto: render's default for the "
                           "renders, off for the training case, as the training step)")
  parser.add_argument("--out", default="", help="JSON record path")
  args = parser.parse_args()
  cases = [c for c in args.cases.split(",") if c]
  unknown = [c for c in cases if c not in CASES]
  if unknown or not cases:
    parser.error(f"--cases: unknown {unknown}; choose from {list(CASES)}")
  if args.rounds < 1 or args.repeats < 1:
    parser.error("--rounds and --repeats must be >= 1")

  modules, patches = load_official(args.official_dir)
  import torch
  torch.set_num_threads(args.threads)
  # torch.meshgrid's indexing warning from get_initial_rays_trig, once per call.
  warnings.filterwarnings("ignore", message="torch.meshgrid")
  patches.append("generator.set_device(cpu) and the deformation net .to(cpu) instead of cuda")
  for p in patches:
    print(f"patched: {p}", flush=True)

  peaks = matmul_peaks()
  print(f"matmul peak: JAX {peaks['jax_gflops']:.1f} GFLOP/s, torch {peaks['torch_gflops']:.1f} "
        "GFLOP/s", flush=True)
  records = [bench_case(name, modules, args, peaks["jax_gflops"]) for name in cases]
  print("\n" + _table(records, peaks))

  if args.out:
    import jaxlib
    record = dict(args=vars(args), jax=jax.__version__, jaxlib=jaxlib.__version__,
                  torch=torch.__version__, numpy=np.__version__, torch_threads=torch.get_num_threads(),
                  device=jax.devices()[0].device_kind, backend=jax.default_backend(),
                  python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                  cpu_count=os.cpu_count(), host=platform.node(), processor=platform.processor(),
                  flop_model=dict(forward_per_ray=FORWARD_FLOP_PER_RAY, deformation=4.50e6,
                                  manifold=4.28e6, radiance=25.7e6, backward_factor=BACKWARD_FACTOR),
                  matmul=peaks, official_patches=patches, cases=records)
    print(f"wrote {write_record(args.out, record)}")


if __name__ == "__main__":
  main()
