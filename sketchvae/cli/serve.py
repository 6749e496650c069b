"""`sketchvae serve`: the browser app (a page where the model finishes your drawing) on 127.0.0.1.

Thin: find and load the checkpoints (`sketchvae.serve.engine.discover`), build the app
(`sketchvae.serve.create_app`) and run it with uvicorn.  Heavy imports happen inside the command.
"""

from __future__ import annotations

import click

from sketchvae.cli import main

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@main.command()
@click.argument("models", nargs=-1, type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 makes the page reachable from other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Unbatched sampling calls (interpolations; all requests with --batch-window-ms 0) running "
                   "at once [default: the number of CPU cores, at most 4].")
@click.option("--batch-window-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Batching: complete and sample requests to one model are decoded together, joining the "
                   "running batch between decoder steps; those arriving within this many milliseconds join "
                   "at once.  Each answer is what the request gets alone.  0 turns batching off.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most requests waiting or being sampled at once; more are answered 503 with Retry-After.")
def serve(models, host, port, device, workers, batch_window_ms, max_queue):
    """Open a page where Sketch-RNN models finish your drawings, several ways at once.

    Draw on the canvas; after each stroke the model proposes endings (click one to keep it).
    The page also samples drawings from nothing, draws chosen classes of class-conditional
    models, interpolates between two drawings (vae models) and saves the drawing as SVG.
    Everything runs locally and offline.

    MODELS are Sketch-RNN checkpoints or folders of them (searched recursively for *.pt).
    Without MODELS: the shipped checkpoints (checkpoints/sheep.pt, checkpoints/multiclass.pt)
    and Magenta's converted models under checkpoints/magenta/.  Other checkpoints in a folder
    (the MNIST image VAEs) are skipped with a note.

    \b
    Examples:
      sketchvae serve                                  # shipped models, http://127.0.0.1:8000/
      sketchvae serve runs/sheep/best.pt --port 8080
      sketchvae serve runs/ checkpoints/magenta/ --device cuda
      sketchvae serve --batch-window-ms 0              # every request in its own decoder pass

    \b
    API (JSON; drawings are stroke-3 [[dx, dy, pen_lifted], ...] in page pixels):
      GET  /api/models       [{"name", "mode", "classes"}]
      POST /api/complete     {"model", "strokes", "n", "temperature", "class"?, "seed"?}
      POST /api/sample       {"model", "n", "temperature", "class"?, "seed"?}
      POST /api/interpolate  {"model", "a", "b", "steps", "temperature"?, "seed"?}
    Limits: n <= 64, 2 <= steps <= 64, 2,000 points a drawing, 256 KiB a request.
    Many people at once: complete and sample requests to one model share its decoder steps
    (continuous batching, --batch-window-ms); beyond --max-queue requests waiting or being
    sampled, the server answers 503 (busy, Retry-After).
    """
    import os
    import socket

    from sketchvae.runtime import configure_cpu, resolve_device

    try:
        dev = resolve_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    import torch

    if dev.type == "cpu":
        configure_cpu()
        # requests run side by side in threads; one torch thread each beats contended intra-op pools
        torch.set_num_threads(1)
    from sketchvae.serve import create_app, discover

    # listen first, so that a port in use is reported before the models are loaded
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        hint = " (another program uses it; choose another with --port)" if port else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {err.strerror or err}{hint}") from None
    sock.listen(128)
    bound = sock.getsockname()[1]

    click.echo("loading models ...", err=True)
    try:
        served, notes = discover(list(models), device=dev)
    except ValueError as err:
        sock.close()
        raise click.ClickException(str(err)) from None
    for note in notes:
        click.echo(f"note: {note}", err=True)
    for m in served.values():
        extra = f", classes: {', '.join(m.classes)}" if m.classes else ""
        click.echo(f"  {m.name}  ({m.mode}{extra})  {m.path}", err=True)

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    allowed = None
    if host in LOCAL_HOSTS:
        allowed = ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(served, workers=workers, allowed_hosts=allowed, batch_window_ms=batch_window_ms,
                     max_queue=max_queue)

    import uvicorn

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{bound}/"
    click.echo(f"serving {len(served)} model{'s' if len(served) != 1 else ''} on {dev.type}; open {url} "
               f"in a browser (Ctrl+C to stop)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
