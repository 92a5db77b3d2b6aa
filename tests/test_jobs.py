"""Background jobs (hp_job_*): run by the job runner outside the workers,
watched, cancelled, bounded, and kept on their own code across a deploy."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import requests
import websockets

from .conftest import APPS, Work, wait_for

MANIFEST = """
modules:
  jobs:
    source: jobs.c
    routes:
      - {path: /jobs, methods: [POST], handler: start}
      - {path: /jobs, handler: list}
      - {path: "/jobs/<id>", handler: status}
      - {path: "/jobs/<id>/cancel", methods: [POST], handler: cancel}
      - {path: "/jobs/<id>/events", handler: events}
    websockets:
      - {path: "/jobs/<id>/watch", on_open: watch, on_message: watch_message}
limits: {job_timeout: 5s, job_memory: 128MiB}
"""


def start(server, arg: str = "", fn: str = "count") -> str:
    r = requests.post(server.url + "/jobs", params={"fn": fn}, data=arg, timeout=5)
    assert r.status_code == 202, r.text
    return r.text


def status(server, job: str) -> dict:
    return server.get(f"/jobs/{job}").json()


def ended(server, job: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (s := status(server, job))["state"] not in ("queued", "running") and s, timeout,
                    f"job {job} to end")


def deployed(up, tmp_path):
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "jobs.c": (APPS / "jobs.c").read_text()})
    assert "deploy succeeded" in work.push()
    return server, work


def test_a_job_runs_reports_progress_and_events_and_ends_with_its_result(up, tmp_path):
    server, _ = deployed(up, tmp_path)
    job = start(server, "20 10")
    done = ended(server, job)
    assert done == {"state": "succeeded", "progress": 100, "message": "step 20 of 20",
                    "result": "counted to 20 on v1", "error": None, "function": "count", "events": 20}
    events = server.get(f"/jobs/{job}/events?since=15").json()
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events) and len(events) >= 5
    assert events[-1]["data"] == '{"progress":100,"message":"step 20 of 20"}'
    assert job in [j["id"] for j in server.get("/jobs").json()]
    bad = requests.post(server.url + "/jobs", params={"fn": "nope"}, timeout=5)
    assert bad.status_code == 400 and "exports no function nope" in bad.text
    assert server.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404


def test_jobs_are_cancelled_stopped_at_their_limits_and_crashes_are_recorded(up, tmp_path):
    server, _ = deployed(up, tmp_path)
    long = start(server, "1000 10")
    wait_for(lambda: status(server, long)["progress"] > 0, what="the long job to run")
    assert requests.post(f"{server.url}/jobs/{long}/cancel", timeout=5).status_code == 200
    assert ended(server, long)["state"] == "cancelled"
    crashed, spun, hog = start(server, fn="crash"), start(server, fn="spin"), start(server, fn="hog")
    assert ended(server, crashed) | {"events": 0} == {
        "state": "failed", "progress": 0, "message": None, "result": "", "function": "crash", "events": 0,
        "error": "the job crashed (SIGSEGV)"}
    assert ended(server, spun)["error"] == "stopped: ran past its job_timeout of 5 s"
    assert ended(server, hog)["state"] == "failed"  # malloc failed under job_memory: it returned HP_ERROR
    assert requests.post(f"{server.url}/jobs/{crashed}/cancel", timeout=5).status_code == 409
    assert server.get("/jobs").status_code == 200  # the workers were never touched
    queued = start(server, "1 1")
    assert requests.post(f"{server.url}/jobs/{queued}/cancel", timeout=5).status_code in (200, 409)


def test_a_running_job_finishes_on_the_code_it_started_with_across_a_deploy(up, tmp_path):
    """... and a WebSocket following it moves to the new workers with no event lost or repeated."""
    server, work = deployed(up, tmp_path)
    job = start(server, "60 50")  # 3 s
    wait_for(lambda: status(server, job)["state"] == "running", what="the job to start")
    work.commit("v2", {"jobs.c": (APPS / "jobs.c").read_text().replace('#define VERSION "v1"', '#define VERSION "v2"')})

    async def follow_through_deploy() -> tuple[list[dict], str]:
        async with websockets.connect(f"{server.url.replace('http://', 'ws://')}/jobs/{job}/watch") as ws:
            pushed = asyncio.get_running_loop().run_in_executor(None, work.push)
            messages = []
            while "state" not in (messages[-1] if messages else {}):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return messages, await pushed

    messages, out = asyncio.run(follow_through_deploy())
    assert "deploy succeeded" in out
    assert messages[-1] == {"job": job, "state": "succeeded", "error": None}
    assert [json.loads(m["data"])["progress"] for m in messages[:-1]] == [i * 100 // 60 for i in range(1, 61)]
    assert ended(server, job)["result"] == "counted to 60 on v1"
    assert ended(server, start(server, "1 1"))["result"] == "counted to 1 on v2"


def test_a_websocket_follows_a_jobs_events_live_and_a_reconnect_resumes(up, tmp_path):
    server, _ = deployed(up, tmp_path)
    base = server.url.replace("http://", "ws://")

    async def watch(job: str, since: str = "") -> list[dict]:
        async with websockets.connect(f"{base}/jobs/{job}/watch{since}") as ws:
            messages = []
            while "state" not in (messages[-1] if messages else {}):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            return messages

    async def live() -> tuple[str, list[dict]]:
        job = start(server, "20 50")
        return job, await watch(job)

    job, messages = asyncio.run(live())
    events, end = messages[:-1], messages[-1]
    assert end == {"job": job, "state": "succeeded", "error": None}
    assert [json.loads(e["data"])["progress"] for e in events] == [i * 5 for i in range(1, 21)]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    again = asyncio.run(watch(job, f"?since={seqs[14]}"))
    assert [e["seq"] for e in again[:-1]] == seqs[15:] and again[-1]["state"] == "succeeded"


def runners(server) -> list[int]:
    """The app's job runner and its job processes (forks of it), oldest first."""
    return [int(p) for p in subprocess.run(["pgrep", "-f", f"hotplate.server.jobs --state {server.state} "],
                                           capture_output=True, text=True).stdout.split()]


def test_a_job_runner_killed_midway_is_restarted_and_the_job_recorded_interrupted(up, tmp_path):
    server, _ = deployed(up, tmp_path)
    job = start(server, "1000 10")
    wait_for(lambda: status(server, job)["progress"] > 0, what="the job to run")
    os.kill(runners(server)[0], signal.SIGKILL)
    done = ended(server, job)
    assert done["state"] == "failed" and done["error"] == "interrupted: the server stopped while it ran"
    assert ended(server, start(server, "2 1"))["state"] == "succeeded"  # a new runner took over
    wait_for(lambda: len(runners(server)) == 1, what="one runner and no job process left")


def test_the_job_runner_runs_only_while_the_app_has_jobs(up, tmp_path):
    """A runner with nothing to run exits after HOTPLATE_JOB_RUNNER_IDLE
    seconds; a worker that queues a job pokes the master's socket, and the
    master starts one again, which runs it (issue 23: no runner at rest)."""
    server = up(env={"HOTPLATE_JOB_RUNNER_IDLE": "1"})
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "jobs.c": (APPS / "jobs.c").read_text()})
    assert "deploy succeeded" in work.push()
    wait_for(lambda: not runners(server), what="the runner gone once idle")
    for _ in range(2):
        assert ended(server, start(server, "2 1"))["state"] == "succeeded", "started again on demand"
        wait_for(lambda: not runners(server), what="gone again")
