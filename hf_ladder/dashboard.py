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
`/../../etc/passwd` is refused (403 when it climbs out, 404 when it is not one of those paths); POST, PUT, DELETE,
PATCH and OPTIONS get 405 (other methods http.server's 501). It binds to 127.0.0.1 unless `--host` says otherwise,
and says so when it does; bound to localhost it answers only requests whose Host is localhost (403 otherwise: a
web page elsewhere cannot read the run through DNS rebinding). A malformed request gets 400, an unreadable file 500.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hf_ladder.runs import loss_curves, read_json
from hf_ladder.schema import RecipeError
from hf_ladder.stages import STAGE_NAMES

STATIC = {"/": ("dashboard.html", "text/html; charset=utf-8"),
          "/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
          "/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8")}
MAX_SAMPLES = 200  # the latest sample rows per stage in /samples.json
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def stages_in(run_dir: Path) -> list[str]:
    """The ladder's stages that have a folder in the run, bottom to top."""
    return [s for s in STAGE_NAMES if (run_dir / s).is_dir()]


def losses(stage_dir: Path, finished: bool) -> dict[str, list[list[float]]]:
    """A stage's [step, loss] pairs, training and validation: from its log_history.json once the manifest says it
    finished (a file left by an earlier attempt is not this one's), else from the Trainer's TensorBoard events
    under checkpoints/runs/ (every run but the monitor's `samples`, oldest first, so a resumed run's later
    values win), which the Trainer flushes at every log."""
    if finished and (history := read_json(stage_dir / "log_history.json")) is not None:
        return {name: [list(p) for p in points] for name, points in loss_curves(history).items()}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    curves: dict[str, dict[int, float]] = {"train": {}, "eval": {}}
    runs = [r for r in (stage_dir / "checkpoints" / "runs").glob("*") if r.is_dir() and r.name != "samples"]
    for run in sorted(runs, key=lambda r: r.stat().st_mtime):
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        for name, tag in (("train", "train/loss"), ("eval", "eval/loss")):
            if tag in events.Tags()["scalars"]:
                curves[name].update({e.step: e.value for e in events.Scalars(tag)})
    return {name: [[step, value] for step, value in sorted(points.items())] for name, points in curves.items()}


def endpoint(run_dir: Path, name: str):
    """The JSON of `/<name>.json` for the run directory (see the module docstring); a nan / inf (a diverged
    run's loss) becomes null, so the page never gets invalid JSON."""
    stages, manifest = stages_in(run_dir), read_json(run_dir / "manifest.json", {})
    finished = (manifest.get("stages") or {}) if isinstance(manifest, dict) else {}
    if name == "loss":
        data = {s: losses(run_dir / s, s in finished) for s in stages}
    elif name == "samples":
        data = {s: complete_lines(run_dir / s / "samples.jsonl")[-MAX_SAMPLES:]
                for s in stages if (run_dir / s / "samples.jsonl").exists()}
    elif name == "alerts":
        data = {s: read_json(run_dir / s / "alerts.json", []) for s in stages}
    else:
        data = manifest
    return finite(data)


def complete_lines(path: Path) -> list[dict]:
    """The rows of a JSONL file that another process is appending to: a line still being written is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def finite(value):
    """`value` with every nan / inf float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def handler_for(run_dir: Path, local_only: bool = True) -> type[BaseHTTPRequestHandler]:
    """The request handler of one run directory: GET / HEAD of the fixed paths, 403 / 404 / 405 otherwise; with
    `local_only`, 403 for a request whose Host header is not localhost (the server is bound to loopback)."""
    static = resources.files("hf_ladder") / "static"

    class Dashboard(BaseHTTPRequestHandler):
        server_version = "hf-ladder-dashboard"

        def do_GET(self):
            self._answer(body=True)

        def do_HEAD(self):
            self._answer(body=False)

        def _answer(self, body: bool):
            try:
                self._route(body)
            except ValueError:  # a request line urllib cannot parse (e.g. an unclosed IPv6 literal)
                self._send(HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain", body)
            except Exception as e:  # an unreadable file: say so, keep serving
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}\n".encode(), "text/plain", body)

        def _route(self, body: bool):
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if local_only and host not in LOOPBACK:  # DNS rebinding: a page from elsewhere naming this port
                return self._send(HTTPStatus.FORBIDDEN, b"Host must be localhost\n", "text/plain", body)
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
        server = ThreadingHTTPServer((host, port), handler_for(run_dir.resolve(), host in LOOPBACK))
    except OSError as e:
        raise RecipeError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    where = f"http://{host if host not in ('', '0.0.0.0', '::') else 'localhost'}:{server.server_address[1]}/"
    print(f"dashboard of {run_dir} at {where} (read-only; Ctrl-C stops it)", flush=True)
    if host not in LOOPBACK:
        print(f"note: bound to {host or 'every interface'}, not localhost: anyone who can reach this machine on port "
              f"{server.server_address[1]} can read this run", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
