"""`hf-ladder dashboard` on a run that is still training: the page in headless Chromium, the JSON endpoints, and
what it refuses (paths outside its files, every method but GET and HEAD)."""

import http.client
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEFAULT_RECIPE, TINY, headless_chromium

from hf_ladder.dashboard import endpoint


def start(*argv: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hf_ladder.cli", *argv], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def wait_for(what, timeout: float = 120, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := what():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def sample_rows(run_dir: Path) -> int:
    path = run_dir / "pretrain" / "samples.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def request(port: int, method: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """One raw request: `path` goes out exactly as written (no client-side normalisation of `..`); `host` replaces
    the Host header (127.0.0.1:port)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.fixture
def training_run(tmp_path):
    """A tiny pretraining run that keeps training (sample rounds every 25 steps) and its dashboard on a free port:
    (run_dir, port, training process, dashboard's console log)."""
    run_dir = tmp_path / "run"
    train = start("run", "pretrain", str(DEFAULT_RECIPE), *TINY, f"run_dir={run_dir}", "pretrain.max_steps=100000",
                  "monitor.sample_every=25", log=tmp_path / "train.log")
    board, board_log = train, tmp_path / "dashboard.log"
    try:
        wait_for(lambda: (run_dir / "pretrain").is_dir(), timeout=120)
        board = start("dashboard", str(run_dir), "--port", "0", log=board_log)  # port 0: a free one, printed
        url = wait_for(lambda: re.search(r"http://\S+/", board_log.read_text()))
        port = int(url.group().rstrip("/").rsplit(":", 1)[1])
        yield run_dir, port, train, board_log.read_text()
    finally:
        for process in (train, board):
            process.terminate()
            process.wait(30)


def test_the_dashboard_follows_a_run_while_it_trains(training_run, tmp_path):
    run_dir, port, train, console = training_run
    assert "127.0.0.1" in console and "not localhost" not in console  # localhost unless told otherwise

    def page() -> tuple[int, int, bool]:
        dom = headless_chromium(f"http://127.0.0.1:{port}/", tmp_path, f"--screenshot={tmp_path}/dashboard.png")
        count = re.search(r'id="sample-count">(\d+)<', dom)
        points = re.search(r'class="chart" data-points="(\d+)"', dom)
        assert count and points, dom[:2000]
        return int(count.group(1)), int(points.group(1)), "<canvas" in dom

    wait_for(lambda: sample_rows(run_dir) >= 12 and (run_dir / "pretrain" / "checkpoints" / "runs").is_dir())
    first, points, canvas = page()
    assert first >= 12 and points > 0 and canvas  # two rounds or more, and the loss chart drawn on its canvas
    wait_for(lambda: sample_rows(run_dir) > first + 6)  # at least one more round
    second, _, _ = page()
    assert second > first and train.poll() is None  # the sample count grew while the run still trains
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000

    status, body = request(port, "GET", "/samples.json")
    samples = json.loads(body)["pretrain"]
    assert status == 200 and len(samples) >= second and {"step", "prompt", "text", "coherence"} <= set(samples[0])
    status, body = request(port, "GET", "/loss.json")
    assert status == 200 and json.loads(body)["pretrain"]["train"]  # live, from the Trainer's TensorBoard events
    assert request(port, "GET", "/alerts.json")[0] == request(port, "GET", "/manifest.json")[0] == 200
    assert request(port, "HEAD", "/")[0] == 200


def test_the_dashboard_refuses_paths_outside_its_files_and_every_method_but_get(training_run):
    _, port, _, _ = training_run
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                 "/%2E%2E%5C%2E%2E%5Cetc%5Cpasswd", "/static/../../manifest.json"):
        status, body = request(port, "GET", path)
        assert status == 403 and b"root:" not in body, path
    for path in ("/etc/passwd", "/pretrain/samples.jsonl", "/manifest", "/dashboard.py", "/static/uPlot.LICENSE"):
        status, body = request(port, "GET", path)
        assert status == 404 and b"root:" not in body, path
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert request(port, method, "/samples.json")[0] == 405, method
    assert request(port, "GET", "/samples.json", host=f"attacker.example:{port}")[0] == 403  # DNS rebinding
    assert request(port, "GET", "/samples.json", host=f"localhost:{port}")[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # a line http.client will not send
        raw.sendall(b"GET http://[::1/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.0 400")  # unparsable: an answer, not a dropped connection


def test_the_endpoints_give_valid_json_for_a_diverged_run_and_a_line_being_written(tmp_path):
    stage = tmp_path / "pretrain"
    stage.mkdir()
    row = {"step": 20, "prompt": "ROMEO:\n", "decoding": "greedy", "text": "", "loss": float("nan"), "coherence": 0.0}
    (stage / "samples.jsonl").write_text(json.dumps(row) + "\n" + '{"step": 40, "prompt": "RO')  # nan, half a line
    (stage / "alerts.json").write_text("[]")
    samples = json.loads(json.dumps(endpoint(tmp_path, "samples"), allow_nan=False))
    assert samples == {"pretrain": [{**row, "loss": None}]}
    assert endpoint(tmp_path, "loss") == {"pretrain": {"train": [], "eval": []}}  # no events yet
    assert endpoint(tmp_path, "manifest") == {} and endpoint(tmp_path, "alerts") == {"pretrain": []}


def test_the_dashboard_says_when_it_is_not_bound_to_localhost(tmp_path):
    board = start("dashboard", str(tmp_path), "--host", "0.0.0.0", "--port", "0", log=tmp_path / "board.log")
    try:
        console = wait_for(lambda: "can read this run" in (text := (tmp_path / "board.log").read_text()) and text,
                           timeout=60)
    finally:
        board.terminate()
        board.wait(10)
    assert "bound to 0.0.0.0, not localhost" in console
    missing = subprocess.run([sys.executable, "-m", "hf_ladder.cli", "dashboard", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such run directory" in missing.stderr and "Traceback" not in missing.stderr
