"""/metrics through prometheus_client (issue 12): per route requests by
status class and latency, per module faults, deploys and their stages;
workers' counts merged across processes."""
import re

import requests

from .test_controller import first_deploy, hello


def test_metrics_per_route_per_module_and_per_deploy(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2", boom="return HP_ERROR;")})
    assert "deploy succeeded" in work.push()
    for _ in range(5):
        assert server.get("/").status_code == 200
    for _ in range(2):
        assert server.get("/boom").status_code == 500
    done = ('\nhotplate_http_requests_total{code="5xx",module="hello",route="/boom"} 2.0',
            '\nhotplate_http_requests_total{code="2xx",module="hello",route="/"} 5.0')

    def scraped() -> str | None:
        text = requests.get(server.api + "/metrics", timeout=5).text
        return text if all(d in text for d in done) else None

    # each worker folds the fast path's counts into the metrics every 100 ms (server/core.py): wait for both
    text = server.wait(scraped, timeout=10, what="the requests counted in /metrics")

    def value(pattern: str) -> float:
        found = re.search("^" + re.escape(pattern) + r" (\S+)$", text, re.M)
        assert found, f"{pattern} not in:\n{text}"
        return float(found.group(1))

    assert value('hotplate_http_requests_total{code="2xx",module="hello",route="/"}') == 5, "both workers, summed"
    assert value('hotplate_http_requests_total{code="5xx",module="hello",route="/boom"}') == 2
    assert value('hotplate_http_request_duration_seconds_count{module="hello",route="/"}') == 5
    assert value('hotplate_http_request_duration_seconds_bucket{le="30.0",module="hello",route="/"}') == 5
    assert value('hotplate_deploys_total{outcome="succeeded"}') == 2
    assert value('hotplate_deploy_stage_seconds_count{stage="build"}') == 2
    assert value("hotplate_up") == 1 and value('hotplate_health{state="Healthy"}') == 1
    # series an alert watches exist at 0 before their first event (issue 21)
    assert value('hotplate_handler_crashes_total{module="hello"}') == 0
    assert value('hotplate_handler_timeouts_total{module="hello"}') == 0
    assert value('hotplate_http_requests_total{code="5xx",module="hello",route="/health"}') == 0


def test_crash_answers_count_as_5xx_everywhere_the_gate_and_alerts_read(up, tmp_path):
    """Each crash replaces its worker, which used to exit before the fast
    path's last counts were folded in: the 500s it answered went missing
    from the requests' 5xx (what the health gate and alerts read), though
    the crashes were counted (issue 21)."""
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2", boom="*(volatile int *)0 = 1; return HP_OK;")})
    assert "deploy succeeded" in work.push()
    crashes = 4
    for _ in range(crashes):
        assert server.get("/boom").status_code == 500
    want = f'\nhotplate_handler_crashes_total{{module="hello"}} {crashes}.0'
    server.wait(lambda: want in requests.get(server.api + "/metrics", timeout=5).text, timeout=20,
                what="the crashes counted")

    def counted() -> tuple[float, int]:
        text = requests.get(server.api + "/metrics", timeout=5).text
        found = re.search(r'^hotplate_http_requests_total\{code="5xx",module="hello",route="/boom"\} (\S+)$', text, re.M)
        s = server.status()
        return float(found.group(1)) if found else 0.0, \
            sum(w["errors_5xx"] for w in s["workers"]) + s["exited_workers"]["errors_5xx"]

    # every worker that answered one has exited by now: nothing is left to fold in later
    server.wait(lambda: all(w["release"] for w in server.status()["workers"]) and counted() == (crashes, crashes),
                timeout=20, what=f"{crashes} crash 500s in /metrics' 5xx and in status' (got {counted()})")
