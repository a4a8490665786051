"""The viewer's frame rate: seconds per frame over HTTP, per resolution and view, after the
warm-up; and a slider drag (requests faster than frames) to show that stale frames are dropped.

  python benchmarks/viewer.py --pretrained=synthfaces --resolutions=64,128 --out=benchmarks/viewer_cpu.json

Each measured frame is a new state (yaw, expression and identity change), fetched the way the
page fetches it (GET /api/frame, PNG decoded by the client not counted). The drag sends
--drag_requests requests of one client --drag_interval seconds apart without waiting for the
answers, as a slider moving faster than frames come; it reports how many were drawn and dropped
and how long after the last request its frame arrived (≈ one frame time, no queue).
"""

from __future__ import annotations

import argparse
import tempfile
import statistics
import threading
import time
import urllib.error
import urllib.request

from anifacegan_jax import experiment
from anifacegan_jax.viewer import frames, server
from records import header, write_record
from timing import machine


def fetch(url: str) -> tuple[int, float]:
  """(status, seconds) of one GET."""
  start = time.perf_counter()
  try:
    with urllib.request.urlopen(url, timeout=600) as response:
      response.read()
      status = response.status
  except urllib.error.HTTPError as error:
    error.read()
    status = error.code
  return status, time.perf_counter() - start


def frame_times(base: str, resolution: int, view: str, count: int) -> dict:
  """First frame (compilation for a new resolution) and the median of `count` later ones."""
  first = fetch(f"{base}/api/frame?res={resolution}&view={view}&seed=0")[1]
  times = []
  for i in range(count):
    status, seconds = fetch(f"{base}/api/frame?res={resolution}&view={view}&seed={i + 1}"
                            f"&yaw={0.3 * (i % 3 - 1)}&exp=jaw_open={0.1 * (i % 10)}")
    assert status == 200, status
    times.append(seconds)
  median = statistics.median(times)
  return dict(resolution=resolution, view=view, first_s=first, median_s=median,
              max_s=max(times), frames_per_second=1.0 / median, count=count)


def drag(base: str, resolution: int, requests: int, interval: float) -> dict:
  """A slider moving faster than frames: requests of one client, not waiting for answers."""
  results = {}

  def one(seq: int):
    results[seq] = fetch(f"{base}/api/frame?res={resolution}&client=drag&seq={seq}"
                         f"&exp=smile_left={seq / requests:.3f}")
    results[seq] += (time.perf_counter(),)

  threads = []
  for seq in range(1, requests + 1):
    threads.append(threading.Thread(target=one, args=(seq,)))
    threads[-1].start()
    last_sent = time.perf_counter()
    time.sleep(interval)
  for thread in threads:
    thread.join()
  drawn = sum(1 for status, _, _ in results.values() if status == 200)
  dropped = sum(1 for status, _, _ in results.values() if status == 409)
  status, _, done = results[requests]
  return dict(resolution=resolution, requests=requests, interval_s=interval, drawn=drawn,
              dropped=dropped, last_status=status, last_latency_s=done - last_sent)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", default="synthfaces")
  parser.add_argument("--resolutions", default="64,128")
  parser.add_argument("--views", default="rgb,depth,normals")
  parser.add_argument("--count", type=int, default=10)
  parser.add_argument("--drag_requests", type=int, default=30)
  parser.add_argument("--drag_interval", type=float, default=0.03)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  resolutions = tuple(int(r) for r in args.resolutions.split(","))
  run = experiment.load_pretrained(args.pretrained)
  renderer = frames.FrameRenderer(run, resolutions=resolutions, resolution=resolutions[0])
  with tempfile.TemporaryDirectory() as out_dir:
    httpd = server.make_server(renderer, port=0, out_dir=out_dir, name=args.pretrained)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = httpd.url.rstrip("/")
    records = [frame_times(base, r, v, args.count) for r in resolutions
               for v in args.views.split(",")]
    drags = [drag(base, r, args.drag_requests, args.drag_interval) for r in resolutions]
    httpd.shutdown()
    httpd.server_close()
  result = dict(header(args, run, machine=machine()), frames=records, drags=drags)
  print("| res | view | first frame s | s / frame (median) | frames/s |\n|---|---|---|---|---|")
  for r in records:
    print(f"| {r['resolution']}² | {r['view']} | {r['first_s']:.2f} | {r['median_s']:.3f} | "
          f"{r['frames_per_second']:.1f} |")
  print("\n| res | requests (every s) | drawn | dropped | last frame after s |\n|---|---|---|---|---|")
  for d in drags:
    print(f"| {d['resolution']}² | {d['requests']} ({d['interval_s']}) | {d['drawn']} | "
          f"{d['dropped']} | {d['last_latency_s']:.2f} |")
  if args.out:
    write_record(args.out, result)


if __name__ == "__main__":
  main()
