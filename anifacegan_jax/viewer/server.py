"""The viewer's HTTP server (standard library `http.server`, one thread per request).

Endpoints (every error is JSON {"error": message} with status 400, 404, 409, 413 or 500; none
stops the server):
  GET  /                         the page (page.html)
  GET  /api/info                 the model: blendshape names, resolutions, defaults and ranges
  GET  /api/frame?STATE&client=C&seq=N   PNG of the state's view; 409 when client C has asked
                                 for a newer frame (seq > N) meanwhile: stale requests are dropped
                                 instead of rendered, so a moving slider never piles up work
  GET  /api/mesh?STATE&format=ply|obj    the frame's visible surface, as a file download
  GET  /api/random_expression?seed=N     {"exp": [64 numbers]} drawn from the run's prior
  POST /api/expression?filename=F.mat    body: a Deep3DFaceRecon .mat / .npz → {"exp": [...]}
  POST /api/record               body: {"frames": [STATE, ...], "format": "gif", "fps": 25} →
                                 the video (also written to the output folder, header
                                 X-Saved-Path)
STATE is `frames.ViewState.query()`: seed, psi, yaw, pitch, view, res, exp.
"""

from __future__ import annotations

import collections
import http.server
import json
import pathlib
import threading
import time
import urllib.parse

import numpy as np
from absl import logging

from anifacegan_jax.viewer import frames as frames_lib

PAGE = pathlib.Path(__file__).with_name("page.html")
MAX_BODY_BYTES = frames_lib.MAX_UPLOAD_BYTES


class NewestRequests:
  """Per client, the sequence number of its newest frame request: a request is stale once the
  same client has sent a newer one (the page sends seq = 1, 2, 3, ...)."""

  def __init__(self, max_clients: int = 256):
    self._newest: collections.OrderedDict[str, int] = collections.OrderedDict()
    self._max_clients = max_clients
    self._lock = threading.Lock()

  def arrive(self, client: str, seq: int) -> None:
    with self._lock:
      if seq > self._newest.get(client, -1):
        self._newest[client] = seq
      self._newest.move_to_end(client)
      while len(self._newest) > self._max_clients:
        self._newest.popitem(last=False)

  def stale(self, client: str, seq: int) -> bool:
    with self._lock:
      return seq < self._newest.get(client, -1)


class ViewerServer(http.server.ThreadingHTTPServer):
  """Serves one `FrameRenderer`; recordings go to `out_dir`.

  Attributes:
    renderer: the frame renderer.
    out_dir: folder of recorded videos.
    name: the model's name shown on the page.
    newest: the newest frame request of each client.
    render_lock: one render at a time, stale requests dropped while they wait for it.
  """

  daemon_threads = True

  def __init__(self, address: tuple[str, int], renderer: frames_lib.FrameRenderer,
               out_dir: str | pathlib.Path, name: str = ""):
    super().__init__(address, _Handler)
    self.renderer = renderer
    self.out_dir = pathlib.Path(out_dir)
    self.name = name
    self.newest = NewestRequests()
    self.render_lock = threading.Lock()

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}/"


class _HttpError(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _query(handler) -> dict[str, list[str]]:
  return urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query, keep_blank_values=True)


def _integer(query, name: str, default: int | None = None) -> int:
  values = query.get(name) or ([] if default is None else [str(default)])
  if not values or not values[0].strip().lstrip("-").isdigit():
    raise frames_lib.ViewError(f"{name}={values[0] if values else ''!r}: expected a whole number")
  return int(values[0])


class _Handler(http.server.BaseHTTPRequestHandler):
  server: ViewerServer
  protocol_version = "HTTP/1.1"

  def log_message(self, format, *args):  # the standard library prints every request to stderr
    logging.debug("viewer %s: " + format, self.address_string(), *args)

  # --- responses ---

  def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("Cache-Control", "no-store")
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _json(self, value, status: int = 200):
    if status >= 400 and self.command == "POST":
      self.close_connection = True  # its body may be unread: don't parse it as the next request
    self._send(status, json.dumps(value).encode(), "application/json")

  def _dispatch(self, routes: dict):
    path = urllib.parse.urlsplit(self.path).path
    try:
      if path not in routes:
        raise _HttpError(404, f"{path}: no such page; the viewer serves "
                         f"{', '.join(sorted(routes))}")
      routes[path]()
    except frames_lib.ViewError as error:
      self._json({"error": str(error)}, 400)
    except _HttpError as error:
      self._json({"error": str(error)}, error.status)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the browser went away (a newer image replaced this one)
    except Exception as error:  # never let one request stop the server
      logging.exception("viewer: %s %s failed", self.command, self.path)
      self._json({"error": f"internal error while serving {path}: "
                           f"{type(error).__name__}: {error}"}, 500)

  def do_GET(self):
    self._dispatch({"/": self._page, "/api/info": self._info, "/api/frame": self._frame,
                    "/api/mesh": self._mesh, "/api/random_expression": self._random_expression})

  def do_POST(self):
    self._dispatch({"/api/expression": self._upload, "/api/record": self._record})

  def _body(self) -> bytes:
    length = self.headers.get("Content-Length", "")
    if not length.isdigit():
      raise _HttpError(411, "the request needs a Content-Length")
    if int(length) > MAX_BODY_BYTES:
      raise _HttpError(413, f"{int(length)} bytes; the limit is {MAX_BODY_BYTES >> 20} MiB")
    return self.rfile.read(int(length))

  # --- endpoints ---

  def _page(self):
    self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")

  def _info(self):
    renderer = self.server.renderer
    defaults = renderer.defaults
    self._json(dict(
        model=self.server.name, step=renderer.run.step, names=list(renderer.names),
        name_minimum=list(renderer.name_minimum),
        resolutions=list(renderer.resolutions), views=list(frames_lib.VIEWS),
        video_formats=list(frames_lib.VIDEO_FORMATS), mesh_formats=list(frames_lib.MESH_FORMATS),
        defaults=dict(seed=defaults.seed, psi=defaults.psi, yaw=defaults.yaw,
                      pitch=defaults.pitch, view=defaults.view, res=defaults.resolution),
        ranges=dict(psi=frames_lib.PSI_RANGE, yaw=frames_lib.YAW_RANGE,
                    pitch=frames_lib.PITCH_RANGE, seed=(0, frames_lib.MAX_SEED),
                    exp=(-frames_lib.EXP_LIMIT, frames_lib.EXP_LIMIT)),
        max_record_frames=frames_lib.MAX_RECORD_FRAMES))

  def _frame(self):
    query = _query(self)
    state = self.server.renderer.parse(query)
    client = (query.get("client") or [""])[0][:64]
    seq = _integer(query, "seq", 0)
    self.server.newest.arrive(client, seq)
    with self.server.render_lock:
      if self.server.newest.stale(client, seq):
        raise _HttpError(409, f"frame {seq} superseded by a newer request of this client")
      start = time.perf_counter()
      png = self.server.renderer.png(state)
      seconds = time.perf_counter() - start
    self._send(200, png, "image/png", {"X-Frame-Seconds": f"{seconds:.4f}"})

  def _mesh(self):
    query = _query(self)
    state = self.server.renderer.parse(query)
    fmt = (query.get("format") or ["ply"])[0]
    with self.server.render_lock:
      data = self.server.renderer.mesh(state, fmt)
    name = f"mesh_s{state.seed}.{fmt}"
    kind = "application/octet-stream" if fmt == "ply" else "text/plain; charset=utf-8"
    self._send(200, data, kind, {"Content-Disposition": f'attachment; filename="{name}"'})

  def _random_expression(self):
    from anifacegan_jax import sampling
    seed = _integer(_query(self), "seed", 0)
    if not 0 <= seed <= frames_lib.MAX_SEED:
      raise frames_lib.ViewError(f"seed={seed}: expected a whole number in "
                                 f"[0, {frames_lib.MAX_SEED}]")
    exp = sampling.expression_target(self.server.renderer.run, "", seed)
    self._json({"exp": [round(float(v), 5) for v in np.asarray(exp)]})

  def _upload(self):
    filename = (_query(self).get("filename") or [""])[0]
    exp = frames_lib.read_uploaded_expression(self._body(), pathlib.PurePath(filename).name)
    self._json({"exp": [float(v) for v in exp]})

  def _record(self):
    try:
      request = json.loads(self._body() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
      raise frames_lib.ViewError(f"record: the body is not JSON ({error})") from None
    if not isinstance(request, dict) or not isinstance(request.get("frames"), list):
      raise frames_lib.ViewError('record: expected {"frames": [query strings], "format": "gif", '
                                 '"fps": 25}')
    renderer = self.server.renderer
    paths = request["frames"]
    if len(paths) > frames_lib.MAX_RECORD_FRAMES:
      raise frames_lib.ViewError(f"record: {len(paths)} frames; the limit is "
                                 f"{frames_lib.MAX_RECORD_FRAMES}")
    states = []
    for i, text in enumerate(paths):
      if not isinstance(text, str):
        raise frames_lib.ViewError(f"record: frame {i} is not a query string")
      try:
        states.append(renderer.parse(urllib.parse.parse_qs(text, keep_blank_values=True)))
      except frames_lib.ViewError as error:
        raise frames_lib.ViewError(f"record: frame {i}: {error}") from None
    fmt = str(request.get("format", "gif"))
    try:
      fps = float(request.get("fps", 25.0))
    except (TypeError, ValueError):
      raise frames_lib.ViewError(f"record: fps={request.get('fps')!r}: expected a number") from None
    with self.server.render_lock:
      path = renderer.record(states, self.server.out_dir, fmt=fmt, fps=fps)
    kind = {"gif": "image/gif", "webp": "image/webp", "mp4": "video/mp4"}[fmt]
    self._send(200, path.read_bytes(), kind, {
        "Content-Disposition": f'attachment; filename="{path.name}"',
        "X-Saved-Path": urllib.parse.quote(str(path.resolve()))})


def make_server(renderer: frames_lib.FrameRenderer, *, host: str = "127.0.0.1", port: int = 8000,
                out_dir: str | pathlib.Path, name: str = "") -> ViewerServer:
  """A `ViewerServer` bound to host:port (port 0: any free port; see `.url`).

  Raises:
    ValueError naming the address when it cannot be bound (in use, not this machine's).
  """
  try:
    return ViewerServer((host, port), renderer, out_dir, name)
  except OSError as error:
    raise ValueError(f"--host={host} --port={port}: cannot listen there ({error.strerror or error});"
                     " choose another port (--port=0 picks a free one)") from None
