"""The dailyrec Airflow plugin in a real API server (issue 12).

A tiny demo world (tests/helpers.py's TINY_ENV): day 1 runs stage by stage (retrieval and ranking),
day 2 runs through Airflow (``airflow dags test daily_retrieval``, the plugin's listener writes the
run's note). Then ``airflow api-server`` starts on 127.0.0.1 with the plugin and the simple auth
manager, and the tests ask for the pages as a read-only user would (a token from ``POST
/auth/token``): the Report tab of the run, the report of a date, the Model history and the Serving
page. A headless Chromium (Debian's ``chromium``; skipped where absent) opens the Report tab of the
run and the Model history page inside the Airflow UI and saves screenshots in the test's tmp folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, TINY_ENV, run_airflow, run_stages, run_tiny

D1, D2 = "2026-11-01", "2026-11-02"
STAGES_D1 = ["ingest.validate_day", "retrieval.features", "retrieval.sample", "retrieval.train_two_tower",
             "retrieval.evaluate_two_tower", "retrieval.export_embeddings", "retrieval.build_index",
             "retrieval.publish_redis", "serving.serving_check", "retrieval.report", "ranking.ranking_samples",
             "ranking.train_mmoe", "ranking.evaluate_mmoe", "ranking.publish_model", "ranking.report"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, token: str | None = None, data: bytes | None = None, timeout: float = 300) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, airflow_home):
    """A finished tiny world, its day-2 run in Airflow, and a running API server with the plugin."""
    tmp = tmp_path_factory.mktemp("ui")
    root, home = tmp / "data", tmp / "airflow"
    home.mkdir()
    env = {**airflow_home, **TINY_ENV, "DAILYREC_DATA_ROOT": str(root), "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,reader:viewer",
           "DAILYREC__RANKING__TRAIN_BASELINE": "false"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)   # the tasks quiet TensorFlow themselves (dailyrec.logs)
    res = run_airflow(env, "db", "migrate", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run_tiny(root, "-m", "dailyrec.demo.generator", "--start-date", D1, "--days", "2", check=True)
    _stages(root, D1)
    dag_test = run_airflow(env, "dags", "test", "daily_retrieval", D2, timeout=900)
    assert dag_test.returncode == 0 and "state=success" in dag_test.stdout + dag_test.stderr, \
        (dag_test.stdout + dag_test.stderr)[-6000:]

    port = _free_port()
    log = open(tmp / "api-server.log", "w")
    proc = subprocess.Popen([env["DAILYREC_AIRFLOW_BIN"], "api-server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if _http(f"{base}/api/v2/monitor/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp / "api-server.log").read_text()[-5000:]
            time.sleep(2)
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        status, body = _http(f"{base}/auth/token", data=json.dumps(
            {"username": "reader", "password": passwords["reader"]}).encode())
        assert status in (200, 201), body
        yield {"base": base, "token": json.loads(body)["access_token"], "env": env, "root": root, "tmp": tmp,
               "dag_test": dag_test.stdout + dag_test.stderr}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _stages(root: Path, day: str) -> None:
    old = os.environ.get("DAILYREC__RANKING__TRAIN_BASELINE")
    os.environ["DAILYREC__RANKING__TRAIN_BASELINE"] = "false"   # run_tiny passes os.environ on
    try:
        run_stages(root, day, *STAGES_D1)
    finally:
        if old is None:
            os.environ.pop("DAILYREC__RANKING__TRAIN_BASELINE", None)
        else:
            os.environ["DAILYREC__RANKING__TRAIN_BASELINE"] = old


def _run_of(server) -> dict:
    status, body = _http(f"{server['base']}/api/v2/dags/daily_retrieval/dagRuns", server["token"])
    assert status == 200, body
    runs = json.loads(body)["dag_runs"]
    assert len(runs) == 1, runs
    return runs[0]


def test_airflow_lists_the_plugin(server):
    res = run_airflow(server["env"], "plugins", "-o", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    plugins = json.loads(res.stdout[res.stdout.index("["):])
    ours = next(p for p in plugins if p["name"] == "dailyrec")
    assert "dailyrec.ui.notes" in str(ours["listeners"]) and "/dailyrec" in str(ours["fastapi_apps"])
    status, body = _http(f"{server['base']}/api/v2/plugins", server["token"])
    views = {v["name"]: v for p in json.loads(body)["plugins"] if p["name"] == "dailyrec" for v in p["external_views"]}
    assert views["Report"]["destination"] == "dag_run" and views["Model history"]["destination"] == "nav"
    assert views["Serving"]["destination"] == "nav"


def test_pages_need_a_user(server):
    assert _http(f"{server['base']}/dailyrec/history")[0] == 401
    assert _http(f"{server['base']}/dailyrec/report/daily_retrieval/x", "not-a-token")[0] in (401, 403)


def test_the_run_note_says_which_day_and_whether_it_shipped(server):
    run = _run_of(server)
    pub = json.loads((server["root"] / f"registry/two_tower/dt={D2}/published.json").read_text())
    assert run["note"] == f"dailyrec: {D2} | gate passed; published | version {pub['version']}"


def test_a_healthy_run_logs_no_error_line(server):
    """No ERROR record and no raw TensorFlow / absl start-up line on stderr (which Airflow's task
    supervisor would log as ERROR), though TF_CPP_MIN_LOG_LEVEL was not set for the run."""
    import re

    chatter = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|cpu_feature_guard|oneDNN custom operations")
    out = server["dag_test"].splitlines()
    bad = [i for i, ln in enumerate(out) if "[error" in ln or " ERROR " in ln or chatter.search(ln)]
    # the lines before the first offending one name the task that printed it
    assert not bad, "\n".join([out[i] for i in bad[:10]] + ["--- before the first:"] + out[max(0, bad[0] - 8):bad[0]])


def test_report_tab_of_the_run(server):
    run = _run_of(server)
    status, page = _http(f"{server['base']}/dailyrec/report/daily_retrieval/"
                         f"{urllib.parse.quote(run['dag_run_id'])}", server["token"])
    assert status == 200, page
    assert f'<span class="cur-date">{D2}</span>' in page
    assert 'class="verdict ok"' in page and "gate passed; published (Airflow run)" in page
    assert page.index('id="verdict"') < page.index("<h2>Samples")
    assert page.count('<img class="plot"') >= 2
    for section in ("Samples", "Training", "Gate: new vs previous vs popularity", "Index", "Redis", "Serving check"):
        assert f"<h2>{section}</h2>" in page, section
    # the artifacts link to the JSON the steps wrote
    status, body = _http(f"{server['base']}/dailyrec/manifest/retrieval/{D2}/train", server["token"])
    assert status == 200 and json.loads(body)["history"]["learning_rate"]
    # the same report is on disk for people without the UI
    on_disk = (server["root"] / f"reports/daily_retrieval/dt={D2}/report.html").read_text()
    assert 'id="verdict"' in on_disk and '<img class="plot"' in on_disk


def test_report_of_a_date_and_of_the_ranking_pipeline(server):
    status, page = _http(f"{server['base']}/dailyrec/report/date/ranking/{D1}", server["token"])
    assert status == 200 and "gate PASSED" in page and "MMoE gates (entropy per task)" in page
    assert _http(f"{server['base']}/dailyrec/report/date/nope/{D1}", server["token"])[0] == 404
    status, page = _http(f"{server['base']}/dailyrec/report/hourly_log_check/any", server["token"])
    assert status == 200 and "No report for hourly_log_check" in page


def test_model_history_page(server):
    status, page = _http(f"{server['base']}/dailyrec/history?pipeline=retrieval", server["token"])
    assert status == 200, page
    assert f"/dailyrec/report/date/retrieval/{D1}" in page and f"/dailyrec/report/date/retrieval/{D2}" in page
    assert page.count('<img class="plot"') == 3 and ">online<" in page
    status, page = _http(f"{server['base']}/dailyrec/history?pipeline=ranking", server["token"])
    assert status == 200 and "click AUC per date" in page


def test_serving_page_answers_a_typed_user(server):
    status, page = _http(f"{server['base']}/dailyrec/serving?user_id=u00001&k=5", server["token"])
    assert status == 200, page
    pub = json.loads((server["root"] / f"registry/two_tower/dt={D2}/published.json").read_text())
    assert f"<b>Current version:</b> {pub['version']}" in page
    assert f"version <code>{pub['version']}</code>" in page and page.count("<tr><td>") >= 5
    assert "retention: the last 3 versions are kept" in page


# ---- headless Chromium ----------------------------------------------------------------------------
class Browser:
    """A headless Chromium driven over the DevTools protocol (``websockets``' sync client, already in
    the environment): set a cookie, open a page, evaluate in one of its frames, take a screenshot."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1800) -> None:
        from websockets.sync.client import connect

        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.2)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Network.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.time() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.time(), 0.1)))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def set_cookie(self, url: str, name: str, value: str) -> None:
        self.call("Network.setCookie", session=True, url=url, name=name, value=value, path="/")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def frames(self) -> list[dict[str, Any]]:
        out, todo = [], [self.call("Page.getFrameTree", session=True)["frameTree"]]
        while todo:
            node = todo.pop()
            out.append(node["frame"])
            todo += node.get("childFrames", [])
        return out

    def evaluate(self, expression: str, frame_id: str | None = None) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if frame_id:
            ctx = self.call("Page.createIsolatedWorld", session=True, frameId=frame_id, worldName="test")
            params["contextId"] = ctx["executionContextId"]
        res = self.call("Runtime.evaluate", session=True, **params)
        return res.get("result", {}).get("value")

    def wait_frame(self, url_part: str, expression: str, timeout: float = 120) -> Any:
        """Poll until a frame whose URL contains ``url_part`` makes ``expression`` truthy; its value."""
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            for f in self.frames():
                if url_part in f.get("url", ""):
                    try:
                        last = self.evaluate(expression, f["id"])
                    except RuntimeError:
                        last = None
                    if last:
                        return last
            time.sleep(1)
        raise TimeoutError(f"no frame {url_part!r} made {expression!r} true in {timeout}s (last: {last!r}); "
                           f"frames: {[f.get('url') for f in self.frames()]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install -y chromium)")
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_chromium_shows_the_report_tab_and_the_model_history(server, browser, tmp_path):
    """The Report tab of the finished run and the Model history page, as a viewer sees them in the
    Airflow UI (the UI's ``_token`` cookie): the verdict and the plots render; screenshots saved."""
    base, run = server["base"], _run_of(server)
    browser.set_cookie(base, "_token", server["token"])
    browser.open(f"{base}/dags/daily_retrieval/runs/{urllib.parse.quote(run['dag_run_id'])}/plugin/dailyrec_report")
    verdict = browser.wait_frame("/dailyrec/report/", "document.querySelector('#verdict') && "
                                                      "document.querySelector('#verdict').innerText")
    assert "gate passed; published" in verdict and "gate PASSED" in verdict
    plots = browser.wait_frame("/dailyrec/report/", "Array.from(document.querySelectorAll('img.plot'))"
                                                    ".filter(i => i.complete && i.naturalWidth > 100).length")
    assert plots >= 2
    assert D2 in browser.wait_frame("/dailyrec/report/", "document.querySelector('.cur-date').innerText")
    browser.screenshot(tmp_path / "report_tab.png")

    browser.open(f"{base}/plugin/dailyrec_history")
    rows = browser.wait_frame("/dailyrec/history", "document.querySelector('#history') && "
                                                   "document.querySelector('#history').innerText")
    assert D1 in rows and D2 in rows
    plots = browser.wait_frame("/dailyrec/history", "Array.from(document.querySelectorAll('img.plot'))"
                                                    ".filter(i => i.complete && i.naturalWidth > 100).length")
    assert plots == 3
    browser.screenshot(tmp_path / "model_history.png")
    assert (tmp_path / "report_tab.png").stat().st_size > 20_000
    print(f"screenshots: {tmp_path / 'report_tab.png'}, {tmp_path / 'model_history.png'}")
