"""The viewer (`python -m anifacegan_jax.serve`): request parsing, the HTTP endpoints on the
shipped model, the entry point, and the page in a real (headless) Chromium."""

import base64
import http.client
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.io
from PIL import Image

from anifacegan_jax import experiment
from anifacegan_jax.viewer import frames, server

RESOLUTION = 64
NAMES = ("jaw_open", "smile_left")


# ------------------------------------------------------------------------------------------------
# Parsing (no rendering).


def parse(text, names=NAMES, resolutions=(64, 128)):
  import urllib.parse
  return frames.parse_state(urllib.parse.parse_qs(text, keep_blank_values=True),
                            frames.ViewState(psi=0.5), resolutions, names)


def test_state_round_trips_through_its_query():
  state = frames.ViewState(seed=7, psi=0.9, z_exp=(0.25, 0.0, -0.5) + (0.0,) * 61, yaw=-0.3,
                           pitch=0.1, view="normals", resolution=128)
  assert parse(state.query()) == state
  assert parse("") == frames.ViewState(psi=0.5)  # the defaults
  named = parse("exp=smile_left=0.5,jaw_open")
  assert named.z_exp[:3] == (1.0, 0.5, 0.0)


@pytest.mark.parametrize("query, names, field", [
    ("seed=-1", NAMES, "unknown identity"), ("seed=abc", NAMES, "unknown identity"),
    ("seed=99999999999", NAMES, "unknown identity"), ("yaw=2", NAMES, "yaw=2: out of range"),
    ("pitch=x", NAMES, "pitch='x': expected a number"), ("psi=nan", NAMES, "psi=nan"),
    ("view=wire", NAMES, "view='wire'"), ("res=96", NAMES, "res='96': this viewer renders 64, 128"),
    ("exp=" + ",".join(["0"] * 65), NAMES, "65 coefficients"),
    ("exp=1,inf", NAMES, "coefficient 1 is inf"), ("exp=frown=1", NAMES, "unknown blendshape"),
    ("exp=jaw_open=big", NAMES, "must be a number"),
    ("exp=jaw_open", (), "belong to SynthFaces"), ("seed=1&seed=2", NAMES, "given 2 times")])
def test_bad_requests_name_the_field(query, names, field):
  with pytest.raises(frames.ViewError, match=field.replace("(", r"\(").replace("+", r"\+")):
    parse(query, names)


def test_uploads_are_read_without_running_code(tmp_path):
  exp = np.linspace(-1, 1, 64, dtype=np.float32)
  buffer = io.BytesIO()
  np.savez(buffer, exp=exp[None])
  np.testing.assert_array_equal(frames.read_uploaded_expression(buffer.getvalue(), "a.npz"), exp)
  scipy.io.savemat(tmp_path / "b.mat", dict(id=np.zeros((1, 80)), exp=exp[None],
                                            tex=np.zeros((1, 80)), angle=np.zeros((1, 3)),
                                            gamma=np.zeros((1, 27)), trans=np.zeros((1, 3))))
  mat = frames.read_uploaded_expression((tmp_path / "b.mat").read_bytes(), "b.mat")
  np.testing.assert_allclose(mat, exp)
  pickled = io.BytesIO()
  np.savez(pickled, exp=np.array([object()], dtype=object))
  for data, name, message in [(b"junk", "c.mat", "c.mat: cannot read"),
                              (pickled.getvalue(), "d.npz", "d.npz: not a readable .npz"),
                              (b"", "e.npz", "empty"), (b"x", "f.png", "f.png: expected"),
                              (buffer.getvalue()[:40], "g.npz", "g.npz: not a readable")]:
    with pytest.raises(frames.ViewError, match=message):
      frames.read_uploaded_expression(data, name)


def test_newest_request_wins():
  newest = server.NewestRequests(max_clients=2)
  newest.arrive("a", 3)
  newest.arrive("a", 2)  # late arrival of an older request
  assert newest.stale("a", 2) and not newest.stale("a", 3) and not newest.stale("b", 0)
  newest.arrive("b", 1)
  newest.arrive("c", 1)  # "a" is forgotten: its requests are never stale again
  assert not newest.stale("a", 0)


# ------------------------------------------------------------------------------------------------
# The server on the shipped model (one renderer, one compilation, shared by the tests below).


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
  run = experiment.load_pretrained("synthfaces")
  renderer = frames.FrameRenderer(run, resolutions=(RESOLUTION,), resolution=RESOLUTION)
  httpd = server.make_server(renderer, port=0, out_dir=tmp_path_factory.mktemp("viewer"),
                             name="synthfaces")
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield httpd
  httpd.shutdown()
  httpd.server_close()


def get(httpd, path, data=None):
  """(status, headers, body) of a GET (or a POST of `data`)."""
  request = urllib.request.Request(httpd.url.rstrip("/") + path, data=data)
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, response.headers, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.headers, error.read()


def picture(body: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(np.int32)


def test_frames_views_and_errors(viewer):
  status, headers, body = get(viewer, "/api/frame?seed=3")
  assert status == 200 and headers["Content-Type"] == "image/png"
  rgb = picture(body)
  assert rgb.shape == (RESOLUTION, RESOLUTION, 3) and float(headers["X-Frame-Seconds"]) > 0
  jaw = picture(get(viewer, "/api/frame?seed=3&exp=jaw_open=1")[2])
  assert np.abs(jaw - rgb).mean() > 0.5  # the expression reaches the image
  depth = picture(get(viewer, "/api/frame?seed=3&view=depth")[2])
  assert (depth[..., 0] == depth[..., 1]).all() and np.abs(depth - rgb).mean() > 10
  normals = picture(get(viewer, "/api/frame?seed=3&view=normals")[2])
  face = depth[..., 0] > 0
  assert face.mean() > 0.2 and (normals[face][:, 2] > 128).all()  # facing the camera
  assert (normals[~face] == 0).all()

  for path, status_code, message in [
      ("/api/frame?yaw=5", 400, "yaw=5: out of range"), ("/api/frame?res=128", 400, "res='128'"),
      ("/api/frame?seq=x", 400, "seq='x'"), ("/nothing", 404, "no such page"),
      ("/api/mesh?format=stl", 400, "ply, obj"), ("/api/random_expression?seed=-2", 400, "seed")]:
    status, headers, body = get(viewer, path)
    assert status == status_code and message in json.loads(body)["error"], (path, body)
  # A request superseded by a newer one of the same client is dropped, not rendered.
  viewer.newest.arrive("tab", 10)
  status, _, body = get(viewer, "/api/frame?client=tab&seq=9")
  assert status == 409 and "superseded" in json.loads(body)["error"]
  assert get(viewer, "/api/frame?client=tab&seq=11")[0] == 200


def test_a_frame_is_what_sample_renders(viewer):
  from anifacegan_jax import animation
  renderer = viewer.renderer
  state = frames.ViewState(seed=0, psi=0.7, z_exp=(0.6,) + (0.0,) * 63, yaw=0.2,
                           resolution=RESOLUTION)  # seed 0: `sample` truncates to the same mean
  trajectory = animation.Trajectory(z_exp=np.asarray(state.z_exp)[None], pitch=[np.pi / 2],
                                    yaw=[np.pi / 2 + 0.2])
  sampled = animation.render_frames(renderer.run, trajectory, seed=0, psi=0.7,
                                    resolution=RESOLUTION)
  shown = renderer.frame(state)  # ψ traced here, a constant there
  assert np.abs(shown.images.astype(int) - sampled.images).max() <= 1
  np.testing.assert_allclose(shown.depth, sampled.depth, atol=1e-5)


def test_mesh_upload_random_and_record(viewer):
  status, headers, body = get(viewer, "/api/mesh?seed=1&format=obj")
  assert status == 200 and 'filename="mesh_s1.obj"' in headers["Content-Disposition"]
  text = body.decode()
  assert text.count("\nv ") > 500 and text.count("\nf ") > 500
  buffer = io.BytesIO()
  np.savez(buffer, exp=np.full(64, 0.5, np.float32))
  status, _, body = get(viewer, "/api/expression?filename=up.npz", data=buffer.getvalue())
  assert status == 200 and json.loads(body)["exp"] == [0.5] * 64
  status, _, body = get(viewer, "/api/expression?filename=up.mat", data=b"not a mat file")
  assert status == 400 and "up.mat" in json.loads(body)["error"]
  exp = json.loads(get(viewer, "/api/random_expression?seed=4")[2])["exp"]
  assert len(exp) == 64 and np.abs(exp).sum() > 0
  assert exp == json.loads(get(viewer, "/api/random_expression?seed=4")[2])["exp"]

  frames_ = ["seed=2", "seed=2&yaw=0.2&view=depth", "seed=2&yaw=0.4&exp=smile_left=1"]
  status, headers, body = get(viewer, "/api/record", json.dumps(
      {"frames": frames_, "format": "gif", "fps": 10}).encode())
  assert status == 200
  saved = pathlib.Path(urllib.request.unquote(headers["X-Saved-Path"]))
  assert saved.parent == viewer.out_dir.resolve() and saved.read_bytes() == body
  video = Image.open(io.BytesIO(body))
  assert video.n_frames == 3 and video.size == (RESOLUTION, RESOLUTION)
  for data, message in [(b"{", "not JSON"), (b'{"frames": ["seed=z"]}', "frame 0: seed='z'"),
                        (b'{"frames": []}', "no frames"),
                        (b'{"frames": ["seed=1"], "format": "avi"}', "gif, webp, mp4")]:
    status, _, body = get(viewer, "/api/record", data)
    assert status == 400 and message in json.loads(body)["error"], body
  # An oversized upload is refused before it is read, and the server keeps serving.
  connection = http.client.HTTPConnection(*viewer.server_address[:2], timeout=60)
  connection.putrequest("POST", "/api/expression?filename=big.npz")
  connection.putheader("Content-Length", str(frames.MAX_UPLOAD_BYTES + 1))
  connection.endheaders()
  assert connection.getresponse().status == 413
  connection.close()
  assert get(viewer, "/api/info")[0] == 200


def test_entry_point_reports_bad_flags_in_one_line(tmp_path):
  command = [sys.executable, "-m", "anifacegan_jax.serve", "--compilation_cache=none"]
  for flags, message in [([], "give a model to view"),
                         (["--pretrained=synthfaces", "--port=70000"], "--port=70000"),
                         (["--pretrained=synthfaces", "--resolutions=64,x"], "--resolutions")]:
    result = subprocess.run(command + flags + [f"--out={tmp_path}"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------
# The page in Chromium.


def _browser():
  """A headless Chromium driven by selenium, or a skip that says what is missing."""
  try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
  except ImportError:
    pytest.skip("selenium is not installed (pip install -e '.[test]')")
  binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)
  driver = shutil.which("chromedriver")
  if not binary or not driver:
    pytest.skip("Chromium and chromedriver not found: install them with "
                "`sh launch/install_chromium.sh` (Debian: apt-get install chromium "
                "chromium-driver)")
  options = webdriver.ChromeOptions()
  options.binary_location = binary
  for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                   "--window-size=1180,860", "--disable-gpu"):
    options.add_argument(argument)
  return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _shown(browser) -> tuple[int, np.ndarray]:
  """(seq, pixels) of the frame the page shows (fetched from its blob URL)."""
  data = browser.execute_async_script("""
      const done = arguments[arguments.length - 1], img = document.getElementById('frame');
      fetch(img.src).then(r => r.arrayBuffer()).then(b => {
        let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c));
        done([Number(img.dataset.seq), btoa(s)]);
      });""")
  return data[0], picture(base64.b64decode(data[1]))


def _wait_for_frame_after(browser, seq, timeout=60.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    shown = browser.execute_script(
        "return Number(document.getElementById('frame').dataset.seq || 0)")
    if shown > seq and browser.execute_script("return document.getElementById('frame').complete"):
      return _shown(browser)
    time.sleep(0.1)
  raise AssertionError(f"the page showed no frame after {seq} within {timeout} s; message: "
                       + browser.find_element("id", "message").text)


def _wait_for_text(browser, element: str, text: str, timeout: float = 60.0):
  deadline = time.monotonic() + timeout
  while text not in browser.find_element("id", element).text:
    assert time.monotonic() < deadline, (f"#{element} did not show {text!r}; #message: "
                                         + browser.find_element("id", "message").text)
    time.sleep(0.1)


def test_page_in_a_browser(viewer, tmp_path):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.keys import Keys
  browser = _browser()
  try:
    browser.set_script_timeout(60)
    browser.get(viewer.url)
    seq, first = _wait_for_frame_after(browser, 0)
    assert first.shape == (RESOLUTION, RESOLUTION, 3)
    # Move the jaw slider with the keyboard, as a user would: End = its largest value.
    jaw = browser.find_element("id", "exp-0")
    assert browser.find_element("css selector", "label[for=exp-0]").text == "jaw_open"
    jaw.send_keys(Keys.END)
    seq, opened = _wait_for_frame_after(browser, seq)
    assert jaw.get_attribute("value") == "1"
    assert np.abs(opened - first).mean() > 0.5  # the image changed
    browser.find_element("id", "view-depth").click()
    seq, depth = _wait_for_frame_after(browser, seq)
    assert (depth[..., 0] == depth[..., 1]).all() and np.abs(depth - opened).mean() > 10
    browser.find_element("id", "view-rgb").click()
    seq, _ = _wait_for_frame_after(browser, seq)
    # Record while dragging the image (the camera turns) and moving a smile; then save.
    browser.find_element("id", "record").click()
    ActionChains(browser).drag_and_drop_by_offset(browser.find_element("id", "frame"), 60,
                                                  0).perform()
    seq, turned = _wait_for_frame_after(browser, seq)
    assert float(browser.find_element("id", "yaw").get_attribute("value")) < -0.1
    browser.find_element("id", "exp-1").send_keys(Keys.END)
    seq, _ = _wait_for_frame_after(browser, seq)
    browser.find_element("id", "record").click()
    _wait_for_text(browser, "saved", "download record_")
    videos = list(viewer.out_dir.glob("record_*.gif"))
    assert videos and Image.open(max(videos, key=lambda p: p.stat().st_mtime)).n_frames >= 3
    screenshot = tmp_path / "viewer.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("ANIFACEGAN_VIEWER_SCREENSHOT"):  # how the README's picture is made
      shutil.copy(screenshot, os.environ["ANIFACEGAN_VIEWER_SCREENSHOT"])
    assert Image.open(screenshot).size[0] > 600
    # A bad value is shown on the page, and the next good one renders again.
    seed = browser.find_element("id", "seed")
    seed.clear()
    seed.send_keys("-4")
    _wait_for_text(browser, "message", "unknown identity")
    seq = browser.execute_script("return Number(document.getElementById('frame').dataset.seq)")
    seed.clear()
    seed.send_keys("5")
    seq, _ = _wait_for_frame_after(browser, seq)
    assert browser.find_element("id", "message").text == ""
  finally:
    browser.quit()
