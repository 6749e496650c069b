"""`sketchvae serve`: draw with a Sketch-RNN in the browser (a page and a JSON API in one process).

    from sketchvae.serve import create_app, discover
    models, notes = discover(["checkpoints/sheep.pt"])      # name -> ServedModel
    app = create_app(models)                                 # an ASGI app; run it with uvicorn

Layout: `engine` (the models and the page-pixel <-> model-unit scaling, no web code), `requests`
(checking the JSON requests, no torch), `app` (Starlette routes, threads, errors) and `static/`
(index.html, style.css, app.js: plain files, no build step, nothing loaded from elsewhere).
`export` writes the same page as static files with the models in the page (`sketchvae export-web`):
static/sketchrnn.js (a Sketch-RNN decoder in JavaScript) and static/inpage.js (the adapter that
answers the page's API calls in the page) are loaded only there.
"""

from sketchvae.serve.app import create_app
from sketchvae.serve.engine import CANVAS, ServedModel, discover

__all__ = ["create_app", "discover", "ServedModel", "CANVAS"]
