"""The FiLM-SIREN sine on this machine: XLA's `jnp.sin` against `layers.polynomial_sin`, beside
the 256 × 256 matmul each FiLM layer runs in front of it, and the polynomial's error.

  python benchmarks/sine.py --out=benchmarks/sine_cpu.json

One array of --points × 256 arguments (N(0, 60²): the range of ω·h + φ in the radiance net);
seconds are medians of --repeats jitted calls (compile time apart); errors against float64 sin /
cos of the same float32 arguments, and over a linspace of |x| ≤ 3,000.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anifacegan_jax.models.layers import polynomial_sin  # noqa: E402
from records import write_record  # noqa: E402  (benchmarks/, beside this script)
from timing import compile_and_time, machine  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--points", type=int, default=262_144)
  parser.add_argument("--width", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  x = 60.0 * jax.random.normal(jax.random.key(0), (args.points, args.width), jnp.float32)
  kernel = jax.random.normal(jax.random.key(1), (args.width, args.width), jnp.float32)
  cases = {
      "matmul (width × width)": (jax.jit(lambda a, k: a @ k), (x, kernel)),
      "jnp.sin": (jax.jit(jnp.sin), (x,)),
      "polynomial_sin": (jax.jit(polynomial_sin), (x,)),
      "jnp.sin, gradient": (jax.jit(jax.grad(lambda a: jnp.sin(a).sum())), (x,)),
      "polynomial_sin, gradient": (jax.jit(jax.grad(lambda a: polynomial_sin(a).sum())), (x,)),
  }
  rows = {}
  for name, (fn, fn_args) in cases.items():
    compile_s, seconds = compile_and_time(fn, *fn_args, repeats=args.repeats)
    rows[name] = dict(seconds=seconds, compile_s=compile_s)
    print(f"{name}: {seconds:.4f} s (compile {compile_s:.2f} s)", flush=True)
  sample = x[:4096]
  exact = np.asarray(sample, np.float64)
  wide = jnp.linspace(-3000.0, 3000.0, 200_001)
  errors = dict(
      sin_max=float(np.abs(np.asarray(polynomial_sin(sample)) - np.sin(exact)).max()),
      jnp_sin_max=float(np.abs(np.asarray(jnp.sin(sample)) - np.sin(exact)).max()),
      cos_max=float(np.abs(np.asarray(jax.vmap(jax.grad(polynomial_sin))(sample.ravel()))
                           - np.cos(exact.ravel())).max()),
      sin_max_linspace_3000=float(np.abs(np.asarray(polynomial_sin(wide))
                                         - np.sin(np.asarray(wide, np.float64))).max()))
  print(errors)
  if args.out:
    write_record(args.out, dict(args=vars(args), seconds=rows, errors=errors, **machine()))


if __name__ == "__main__":
  main()
