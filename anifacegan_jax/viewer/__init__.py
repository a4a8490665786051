"""The interactive viewer (`python -m anifacegan_jax.serve`): a local web page with identity,
expression and pose controls over a trained run's EMA generator.

  frames.py   `ViewState` (one frame's settings, parsed and checked from a request) and
              `FrameRenderer` (one jitted frame function per resolution; RGB, depth, normals,
              meshes and recorded videos of a state)
  server.py   the HTTP server (standard library): the page, the frame / mesh / record / upload
              endpoints, newest-request-wins rendering, errors as JSON that never stop it
  page.html   the page (plain HTML and JavaScript, no build step)
"""
