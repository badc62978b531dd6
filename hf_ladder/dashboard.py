"""`hf-ladder dashboard RUN_DIR`: a read-only web page that follows a run while it trains.

    hf-ladder dashboard runs/shakespeare-tiny [--port 8686] [--host 127.0.0.1]

Per stage: the train / validation loss curve, the latest sample round with its readings and loss tier, the
alerts, the manifest's status; the page (`hf_ladder/static/dashboard.html`, charts by the vendored uPlot) reloads
its data every few seconds from four JSON endpoints anyone may poll:

    /loss.json       {stage: {"train": [[step, loss], ...], "eval": [[step, loss], ...]}}
    /samples.json    {stage: [samples.jsonl rows]}
    /alerts.json     {stage: [alerts]}
    /manifest.json   the run's manifest.json ({} before the first stage finishes)

While a stage trains, its losses come from the Trainer's TensorBoard events (read with TensorBoard's own
EventAccumulator), its samples and alerts from the files the sample monitor appends to; once it has finished,
from its log_history.json. The server (the standard library's `http.server`) only reads: GET and HEAD, a fixed
set of paths (the page, its two static files, the endpoints), nothing else from the disk, so a path such as
`/../../etc/passwd` is refused (403 when it climbs out, 404 when it is not one of those paths); any other method
gets 405. It binds to 127.0.0.1 unless `--host` says otherwise, and says so when it does.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hf_ladder.runs import read_json, read_jsonl
from hf_ladder.schema import RecipeError
from hf_ladder.stages import STAGE_NAMES

STATIC = {"/": ("dashboard.html", "text/html; charset=utf-8"),
          "/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
          "/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8")}
MAX_SAMPLES = 200  # the latest sample rows per stage in /samples.json


def stages_in(run_dir: Path) -> list[str]:
    """The ladder's stages that have a folder in the run, bottom to top."""
    return [s for s in STAGE_NAMES if (run_dir / s).is_dir()]


def losses(stage_dir: Path) -> dict[str, list[list[float]]]:
    """A stage's [step, loss] pairs, training and validation: from log_history.json once the stage has written
    it, else from the Trainer's TensorBoard events under checkpoints/runs/ (every run but the monitor's
    `samples`), which the Trainer flushes at every log."""
    history = read_json(stage_dir / "log_history.json")
    if history is not None:
        return {"train": [[h["step"], h["loss"]] for h in history if "loss" in h],
                "eval": [[h["step"], h["eval_loss"]] for h in history if "eval_loss" in h]}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    curves: dict[str, dict[int, float]] = {"train": {}, "eval": {}}
    for run in sorted((stage_dir / "checkpoints" / "runs").glob("*")):
        if run.name == "samples" or not run.is_dir():
            continue
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        for name, tag in (("train", "train/loss"), ("eval", "eval/loss")):
            if tag in events.Tags()["scalars"]:
                curves[name].update({e.step: e.value for e in events.Scalars(tag)})  # a resumed run's later file wins
    return {name: [[step, value] for step, value in sorted(points.items())] for name, points in curves.items()}


def endpoint(run_dir: Path, name: str):
    """The JSON of `/<name>.json` for the run directory (see the module docstring)."""
    stages = stages_in(run_dir)
    if name == "loss":
        return {s: losses(run_dir / s) for s in stages}
    if name == "samples":
        return {s: read_jsonl(run_dir / s / "samples.jsonl")[-MAX_SAMPLES:]
                for s in stages if (run_dir / s / "samples.jsonl").exists()}
    if name == "alerts":
        return {s: read_json(run_dir / s / "alerts.json", []) for s in stages}
    return read_json(run_dir / "manifest.json", {})


def handler_for(run_dir: Path) -> type[BaseHTTPRequestHandler]:
    """The request handler of one run directory: GET / HEAD of the fixed paths, 403 / 404 / 405 otherwise."""
    static = resources.files("hf_ladder") / "static"

    class Dashboard(BaseHTTPRequestHandler):
        server_version = "hf-ladder-dashboard"

        def do_GET(self):
            self._answer(body=True)

        def do_HEAD(self):
            self._answer(body=False)

        def _answer(self, body: bool):
            path = unquote(urlsplit(self.path).path)
            if ".." in path.replace("\\", "/").split("/"):
                return self._send(HTTPStatus.FORBIDDEN, b"outside the dashboard's files\n", "text/plain", body)
            if path in STATIC:
                file, kind = STATIC[path]
                return self._send(HTTPStatus.OK, (static / file).read_bytes(), kind, body)
            name = path.removeprefix("/").removesuffix(".json")
            if path.endswith(".json") and name in ("loss", "samples", "alerts", "manifest"):
                data = json.dumps(endpoint(run_dir, name), allow_nan=False, default=str).encode()
                return self._send(HTTPStatus.OK, data, "application/json", body)
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", body)

        def _refuse(self):
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def _send(self, status: HTTPStatus, data: bytes, kind: str, body: bool):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format, *args):  # quiet: the page polls every few seconds
            pass

    return Dashboard


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8686) -> None:
    """Serve the dashboard of `run_dir` until interrupted (Ctrl-C).

    Raises:
        RecipeError: `run_dir` is not a directory, `port` is not a TCP port, or the server cannot listen there
            (the port is taken, the host is not an address of this machine).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: no such run directory (runs/<recipe>)")
    if not 0 <= port <= 65535:
        raise RecipeError(f"--port: {port} is not a TCP port (0-65535; 0 picks a free one)")
    try:
        server = ThreadingHTTPServer((host, port), handler_for(run_dir.resolve()))
    except OSError as e:
        raise RecipeError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    where = f"http://{host if host not in ('', '0.0.0.0', '::') else 'localhost'}:{server.server_address[1]}/"
    print(f"dashboard of {run_dir} at {where} (read-only; Ctrl-C stops it)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: bound to {host or 'every interface'}, not localhost: anyone who can reach this machine on port "
              f"{server.server_address[1]} can read this run", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
