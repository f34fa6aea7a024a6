"""Issue 13's end-to-end test: one real `llmops serve` on the embedded default (no config file), driven over HTTP.

A JSONL dataset (input, reference; four rows in Chinese, Russian, Arabic and Greek) is uploaded to the catalog
and evaluated, through the gateway, on:

* ``demo`` (the embedded default's built-in mock upstream, a test double): run A with every reference metric
  and perplexity (``max_tokens`` 4), run B the same with ``max_tokens`` 2;
* ``openai`` (the embedded default's route to ``OPENAI_BASE_URL``, here a second mock started with ``--faults``
  so ``POST /_mock/config`` can script it): run C, ``combined``, whose non-Latin rows are answered in their own
  script, judged by a catalog model (an approved external model on that same mock: route ``judge``) through an
  inline rubric, and reviewed by two reviewer keys;
* a serving endpoint on LocalRuntime (its process is the mock upstream too): runs D1 and D2, the evidence for
  its promotion gate.

Every evaluation call is metered under the worker's own service key (a data-plane key exists, so the gateway
wants keys): ``usage_records`` hold each run's requests once, and the cost API shows the same counts. The
numbers asserted are worked out here from the mocks' rules: the answer is the word cycle ``mock token reply
from …`` capped by ``max_tokens`` (or the scripted reply), and a token's logprob is ``-(1 + len(word) % 3) / 2``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sqlite3
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.eval_bench import data, start_run, upload_dataset, wait_run
from loadtests.procs import free_port, start_process, stop_process, wait_for_port
from loadtests.serving_bench import approve, register_local_model, write_gguf
from tests.serve_process import until

pytestmark = pytest.mark.timeout(420)

ADMIN_KEY = "e2e-admin-key-not-a-secret"
CHAIN = "mock token reply from"  # the mock's first four words
ROWS = [
    {"input": "[r00] What does the double say first?", "reference": CHAIN},
    {"input": "[r01] And what does it say then?", "reference": CHAIN},
    {"input": "[r02] Repeat the opening words", "reference": CHAIN},
    {"input": "[r03] Quote the start of the reply", "reference": CHAIN},
    {"input": "[r04] Give the first four words", "reference": CHAIN},
    {"input": "[r05] Give the first three words", "reference": "mock token reply"},
    {"input": "[r06] Three words, please", "reference": "mock token reply"},
    {"input": "[r07] Only the first three", "reference": "mock token reply"},
    {"input": "[r08] 请用中文打个招呼", "reference": "你好 世界"},
    {"input": "[r09] Поздоровайся по-русски", "reference": "привет мир"},
    {"input": "[r10] سلّم بالعربية", "reference": "مرحبا بالعالم"},
    {"input": "[r11] Χαιρέτησε στα ελληνικά", "reference": "γεια σου κόσμε"},  # noqa: RUF001 - Greek on purpose
]
NON_LATIN = range(8, 12)
# The judge's verdict per row (None: an answer in neither format, so unparseable); row 6 answers with the
# documented line pattern instead of JSON.
JUDGED: dict[int, int | None] = {0: 5, 1: 4, 2: 4, 3: None, 4: 3, 5: 4, 6: 2, 7: 3, 8: 5, 9: 4, 10: 2, 11: 1}
RUBRIC = "JUDGE {{ input }}\nANSWER {{ output }}\nRate the answer from {{ scale_min }} to {{ scale_max }}."
REVIEWS = {"rev-a": [5, 4, 4, 3, 3, 4, 2, 3, 5, 4, 2, 2], "rev-b": [4, 4, 5, 3, 2, 4, 3, 3, 5, 5, 1, 2]}


def _script() -> list[dict[str, str]]:
    """Judge rules first (they match the inline rubric's ``JUDGE <input>``), then the generation rules for the
    non-Latin rows (their input's marker): each row's answer is its reference, in its own script."""
    judge = []
    for i, score in JUDGED.items():
        reply = ("I'd give it a 4, roughly" if score is None else f"Score: {score}" if i == 6
                 else json.dumps({"score": score, "rationale": f"row {i}"}))
        judge.append({"match": f"JUDGE [r{i:02d}]", "reply": reply})
    return judge + [{"match": f"[r{i:02d}]", "reply": ROWS[i]["reference"]} for i in NON_LATIN]


def mock_perplexity(reference: str) -> float:
    """The mock's rule (adapters/testdoubles/mock_endpoints.token_logprob) over the reference's words."""
    return math.exp(statistics.fmean((1 + len(w) % 3) / 2 for w in reference.split()))


def token_f1(words_out: int, words_ref: int) -> float:
    """SQuAD token F1 of a word-cycle prefix against a shorter or longer prefix (the overlap is the shorter)."""
    common = min(words_out, words_ref)
    return 2 * common / (words_out + words_ref)


def quadratic_kappa(a: Sequence[int], b: Sequence[int], lo: int, hi: int) -> float:
    """Cohen's kappa with quadratic weights, from its definition: 1 - sum(w * observed) / sum(w * expected)."""
    k = hi - lo + 1
    n = len(a)
    observed = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b, strict=True):
        observed[x - lo][y - lo] += 1 / n
    pa = [sum(row) for row in observed]
    pb = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    w = [[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)]
    disagree = sum(w[i][j] * observed[i][j] for i in range(k) for j in range(k))
    chance = sum(w[i][j] * pa[i] * pb[j] for i in range(k) for j in range(k))
    return 1 - disagree / chance


@dataclass(frozen=True)
class Live:
    url: str
    judge_mock: str  # base URL of the scriptable mock (no /v1)
    workdir: Path

    def admin(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/llm-ops/v1", timeout=30, headers={"authorization": f"Bearer {key}"})

    def db(self) -> sqlite3.Connection:
        """The embedded default's SQLite database, read-only (the server keeps writing it)."""
        return sqlite3.connect(f"file:{self.workdir / '.llmops' / 'llmops.db'}?mode=ro", uri=True, timeout=10)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    mock_port, port = free_port(), free_port()
    mock = start_process([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port), "--faults"],
                         log=tmp_path / "mock.log", cwd=tmp_path)
    server = None
    try:
        wait_for_port(mock_port, proc=mock)
        server = start_process([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
                               log=tmp_path / "serve.log", cwd=tmp_path,
                               env={"LLMOPS_ADMIN_KEY": ADMIN_KEY, "OPENAI_API_KEY": "sk-mock-not-a-key",
                                    "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1"})
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert server is not None and server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            return False

        until(ready, 90)
        yield Live(url=url, judge_mock=f"http://127.0.0.1:{mock_port}", workdir=tmp_path)
    finally:
        if server is not None:
            stop_process(server, timeout_s=30)
        stop_process(mock)
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _endpoint(admin: httpx.Client, name: str, model_id: str) -> str:
    return str(data(admin.post("/serving/endpoints", json={"name": name, "modelId": model_id, "useGpu": False}),
                    201)["id"])


def _ready(admin: httpx.Client, endpoint_id: str) -> None:
    until(lambda: data(admin.get(f"/serving/endpoints/{endpoint_id}"))["status"] == "ready", 60)


def _promote(admin: httpx.Client, endpoint_id: str, environment: str, **extra: Any) -> httpx.Response:
    return admin.post(f"/serving/endpoints/{endpoint_id}/promote", json={"environment": environment, **extra})


def _scores(admin: httpx.Client, run_id: str) -> dict[int, dict[str, Any]]:
    """Item index -> target 0's scores."""
    page = data(admin.get(f"/evaluation/runs/{run_id}/items", params={"pageSize": 100}))
    assert page["total"] == len(ROWS)
    return {item["index"]: item["scores"]["0"] for item in page["items"]}


def _run(name: str, dataset_id: str, target: dict[str, str], **over: Any) -> dict[str, Any]:
    return {"name": name, "targets": [target], "dataset": {"datasetId": dataset_id},
            "mapping": {"input": "input", "reference": "reference"}, "concurrency": 4, **over}


def test_dataset_evaluated_judged_reviewed_compared_exported_and_gating_a_promotion(live: Live) -> None:
    httpx.post(live.judge_mock + "/_mock/config", json={"script": _script()}).raise_for_status()
    with live.admin() as admin:
        # A data-plane key exists, so every route but demo wants one: the worker must use its service key.
        team = data(admin.post("/governance/teams", json={"name": "e2e"}), 201)["id"]
        data(admin.post("/governance/keys", json={"name": "app", "teamId": team, "roles": ["inference"]}), 201)
        reviewer_keys = {name: data(admin.post("/admin/keys", json={"name": name, "role": "viewer"}), 201)["key"]
                         for name in REVIEWS}
        judge_model = data(admin.post("/catalog/models", json={
            "name": "judge", "type": "external", "ownerTeam": "e2e",
            "provider": {"kind": "openai", "baseUrl": live.judge_mock + "/v1", "model": "judge-model",
                         "apiKeyRef": "env:OPENAI_API_KEY"}}), 201)["id"]
        approve(admin, judge_model)
        local_model = register_local_model(admin, "e2e-local", write_gguf(live.workdir / "e2e.gguf"))
        candidate, other = _endpoint(admin, "e2e-cand", local_model), _endpoint(admin, "e2e-other", local_model)
        dataset = upload_dataset(admin, "e2e-qa", ROWS)
        for endpoint in (candidate, other):
            _ready(admin, endpoint)
            assert _promote(admin, endpoint, "STG").status_code == 200  # only PROD is gated

        # The candidate's gate: thresholds on this dataset, and not worse than production (route demo).
        gate = {"datasetId": dataset, "thresholds": [{"metric": "exact_match", "min": 0.4},
                                                     {"metric": "perplexity", "max": 5}],
                "baseline": {"kind": "route", "id": "demo"}, "nonInferiorityMetric": "token_f1",
                "nonInferiorityMargin": 0.05}
        data(admin.put(f"/evaluation/gates/endpoint/{candidate}", json=gate))
        refused = _promote(admin, candidate, "PROD")
        assert refused.status_code == 409, refused.text
        assert refused.json()["data"]["gate"]["passed"] is False

        every_metric = ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity"]
        run_a = start_run(admin, _run("demo-4", dataset, {"kind": "route", "id": "demo"}, metrics=every_metric,
                                      params={"max_tokens": 4}))
        run_b = start_run(admin, _run("demo-2", dataset, {"kind": "route", "id": "demo"},
                                      metrics=["exact_match", "token_f1"], params={"max_tokens": 2}))
        run_c = start_run(admin, _run(
            "combined", dataset, {"kind": "route", "id": "openai"}, type="combined", params={"max_tokens": 4},
            judge={"model": {"kind": "model", "id": judge_model}, "rubric": RUBRIC},
            review={"reviewers": list(REVIEWS), "ratersPerItem": 2}))
        run_d1 = start_run(admin, _run("cand-2", dataset, {"kind": "endpoint", "id": candidate},
                                       metrics=["exact_match", "token_f1", "perplexity"], params={"max_tokens": 2}))
        runs = {r: wait_run(admin, r, within_s=180) for r in (run_a, run_b, run_c, run_d1)}
        assert {r: v["status"] for r, v in runs.items()} == dict.fromkeys(runs, "succeeded"), \
            {r: v["error"] for r, v in runs.items()}

        # -- run A: every reference metric, by the mock's rules ------------------------------------------
        a = runs[run_a]
        assert a["progress"] == {"done": 12, "failed": 0, "total": 12}
        m = a["metrics"]["0"]
        expected_f1 = [token_f1(4, len(r["reference"].split())) if i < 8 else 0.0 for i, r in enumerate(ROWS)]
        assert m["exact_match"]["value"] == pytest.approx(5 / 12)
        assert m["token_f1"]["value"] == pytest.approx(statistics.fmean(expected_f1))
        assert m["rouge1"]["value"] == pytest.approx(statistics.fmean(expected_f1))  # unigrams: the same F1
        assert m["rouge2"]["value"] == pytest.approx((5 * 1 + 3 * 0.8) / 12)  # 3-word refs: 2 of 3 bigrams
        perplexities = [mock_perplexity(r["reference"]) for r in ROWS]
        assert m["perplexity"]["value"] == pytest.approx(statistics.fmean(perplexities))
        for name in every_metric:
            agg = m[name]
            assert agg["available"] and agg["n"] == 12, (name, agg)
            assert agg["ciLow"] <= agg["value"] <= agg["ciHigh"], (name, agg)
        assert m["bleu"]["note"].startswith("nrefs:1") and m["chrf"]["note"].startswith("nrefs:1")  # signatures
        scores_a = _scores(admin, run_a)
        for i, row in enumerate(ROWS):
            assert scores_a[i]["perplexity"] == pytest.approx(mock_perplexity(row["reference"])), row
            assert scores_a[i]["exact_match"] == (1.0 if i < 5 else 0.0)
        assert scores_a[0]["bleu"] == pytest.approx(100) and scores_a[0]["chrf"] == pytest.approx(100)

        # -- usage: each run's calls metered once, under the worker's service key ----------------------
        def metered() -> dict[str, list[Any]]:
            with contextlib.closing(live.db()) as db:
                return {run: db.execute("select request_id, endpoint, route, key_id, status from usage_records "
                                        "where request_id like ?", (f"{run}.%",)).fetchall() for run in runs}

        calls = {run_a: 24, run_b: 12, run_c: 24, run_d1: 24}  # perplexity: a second call; C: 12 judge calls
        # A run is finished once its items' usage records exist; its last judge calls' records may still be in
        # the gateway's usage buffer (flushed within a second), so wait for them rather than race the writer.
        until(lambda: {r: len(u) for r, u in metered().items()} == calls, 15)
        usage = metered()
        assert {r: len(u) for r, u in usage.items()} == calls
        assert all(len({row[0] for row in u}) == len(u) and {row[4] for row in u} == {200} for u in usage.values())
        assert sorted(row[1] for row in usage[run_a]) == ["chat"] * 12 + ["completions"] * 12
        service_keys = {row[3] for u in usage.values() for row in u}
        assert len(service_keys) == 1 and None not in service_keys
        service_key = service_keys.pop()
        assert data(admin.get(f"/governance/keys/{service_key}"))["name"] == "system.evaluation"
        item_requests = {o["requestId"] for o in (x["outputs"][0] for x in data(admin.get(
            f"/evaluation/runs/{run_a}/items", params={"pageSize": 100}))["items"])}
        assert item_requests <= {row[0] for row in usage[run_a]}

        def cost_api() -> dict[str, int]:
            rows = data(admin.get("/observability/usage", params={
                "granularity": "total", "group_by": "route", "key_id": service_key}))["rows"]
            return {r["route"]: r["requests"] for r in rows}

        wanted = {"demo": 36, "openai": 12, "judge": 12, "e2e-cand": 24}
        until(lambda: cost_api() == wanted, 30)

        # -- run C: the non-Latin answers, the judge, two reviewers and their agreement ------------------
        c = runs[run_c]
        scores_c = _scores(admin, run_c)
        for i in NON_LATIN:  # answered in their own script: a Unicode-aware ROUGE scores them, not 0
            assert scores_c[i]["rouge1"] == scores_c[i]["rougeL"] == scores_c[i]["token_f1"] == 1.0, scores_c[i]
            assert scores_c[i]["exact_match"] == 1.0 and scores_c[i]["chrf"] == pytest.approx(100)
        parsed = {i: s for i, s in JUDGED.items() if s is not None}
        judge = c["judge"]
        assert (judge["route"], judge["parsed"], judge["unparseable"], judge["failed"]) == ("judge", 11, 1, 0)
        assert judge["targets"]["0"]["meanScore"]["value"] == pytest.approx(statistics.fmean(parsed.values()))
        assert c["metrics"]["0"]["judge_score"]["n"] == 11
        assert {i: s.get("judge_score") for i, s in scores_c.items()} == {i: JUDGED[i] for i in range(12)}

        for name, key in reviewer_keys.items():
            with live.admin(key) as reviewer:
                tasks = data(reviewer.get(f"/evaluation/runs/{run_c}/human-review/tasks",
                                          params={"pageSize": 50}))
                assert sorted(t["item"] for t in tasks["items"]) == list(range(12))
                for i, score in enumerate(REVIEWS[name]):
                    summary = data(reviewer.post(f"/evaluation/runs/{run_c}/human-review",
                                                 json={"item": i, "score": score, "comment": f"{name} on {i}"}))
        humans = [statistics.fmean(pair) for pair in zip(*REVIEWS.values(), strict=True)]
        assert summary["ratings"] == 24 and summary["itemsRated"] == 12
        assert summary["meanScore"]["value"] == pytest.approx(statistics.fmean(humans))
        agreement = summary["agreement"]
        assert (agreement["method"], agreement["raters"], agreement["n"]) == ("cohen_kappa_weighted", 2, 12)
        assert agreement["value"] == pytest.approx(quadratic_kappa(REVIEWS["rev-a"], REVIEWS["rev-b"], 1, 5))
        rounded = {i: math.floor(h + 0.5) for i, h in enumerate(humans)}  # the humans' mean, half up
        judged_rows = sorted(parsed)
        vs_judge = summary["judgeAgreement"]
        assert vs_judge["n"] == 11 and vs_judge["value"] == pytest.approx(quadratic_kappa(
            [parsed[i] for i in judged_rows], [rounded[i] for i in judged_rows], 1, 5))
        assert data(admin.get(f"/evaluation/runs/{run_c}"))["human"]["agreement"] == agreement

        # -- compare: B (max_tokens 2) as baseline, A (4) as candidate, and the other way round -------------
        forward = data(admin.get("/evaluation/runs/compare", params={"runIds": f"{run_b},{run_a}"}))
        f1 = next(x for x in forward["metrics"] if x["metric"] == "token_f1")
        diffs = [token_f1(4, len(r["reference"].split())) - token_f1(2, len(r["reference"].split()))
                 if i < 8 else 0.0 for i, r in enumerate(ROWS)]
        assert f1["sharedItems"] == 12 and f1["higherIsBetter"]
        assert f1["difference"]["value"] == pytest.approx(statistics.fmean(diffs))
        assert 0 < f1["difference"]["ciLow"] <= f1["difference"]["value"] <= f1["difference"]["ciHigh"]
        reasons = forward["recommendation"]["reasons"]
        assert any(r.startswith("better on token_f1") for r in reasons), reasons
        assert forward["recommendation"]["promote"] == (not any(r.startswith("worse on") for r in reasons)), reasons
        backward = data(admin.get("/evaluation/runs/compare", params={"runIds": f"{run_a},{run_b}"}))
        assert backward["recommendation"]["promote"] is False
        assert any(r.startswith("worse on token_f1") for r in backward["recommendation"]["reasons"])

        # -- export, streamed -------------------------------------------------------------------------------
        with admin.stream("GET", f"/evaluation/runs/{run_a}/export", params={"format": "csv"}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
            assert resp.headers.get("transfer-encoding") == "chunked"
            text = b"".join(resp.iter_bytes()).decode("utf-8")
        exported = list(csv.DictReader(io.StringIO(text)))
        assert [int(r["index"]) for r in exported] == list(range(12))
        assert [r["reference"] for r in exported] == [r["reference"] for r in ROWS]  # non-Latin text intact
        assert [float(r["exact_match"]) for r in exported] == [1.0] * 5 + [0.0] * 7
        with admin.stream("GET", f"/evaluation/runs/{run_a}/export", params={"format": "json"}) as resp:
            assert resp.status_code == 200 and resp.headers.get("transfer-encoding") == "chunked"
            records = json.loads(b"".join(resp.iter_bytes()))
        assert [r["input"] for r in records] == [r["input"] for r in ROWS]
        assert [r["scores"]["perplexity"] for r in records] == pytest.approx(perplexities)
        assert {r["requestId"] for r in records} == item_requests

        # -- the gate: D1 (max_tokens 2) fails its threshold, D2 (4) passes it and the baseline check --------
        refused = _promote(admin, candidate, "PROD")
        assert refused.status_code == 409, refused.text
        verdict = refused.json()["data"]["gate"]
        assert verdict["passed"] is False and "exact_match" in verdict["reason"]
        assert verdict["evidence"]["candidateRun"] == run_d1
        run_d2 = start_run(admin, _run("cand-4", dataset, {"kind": "endpoint", "id": candidate},
                                       metrics=["exact_match", "token_f1", "perplexity"], params={"max_tokens": 4}))
        d2 = wait_run(admin, run_d2, within_s=120)
        assert d2["status"] == "succeeded", d2["error"]
        assert d2["metrics"]["0"]["exact_match"]["value"] == pytest.approx(5 / 12)
        promoted = _promote(admin, candidate, "PROD")
        assert promoted.status_code == 200, promoted.text
        assert data(admin.get(f"/serving/endpoints/{candidate}"))["environment"] == "PROD"
        audit = data(admin.get("/audit/logs", params={"action": "serving.endpoint.promote",
                                                      "resourceId": candidate}))["items"][0]
        assert audit["after"]["gate"]["passed"] is True and audit["after"]["override"] is False
        assert audit["after"]["gate"]["evidence"]["candidateRun"] == run_d2
        assert audit["after"]["gate"]["evidence"]["baselineRun"] in (run_a, run_b)

        # -- an admin override, with a reason, of a gate that fails (no run on this endpoint) -----------------
        data(admin.put(f"/evaluation/gates/endpoint/{other}", json={"thresholds": [
            {"metric": "exact_match", "min": 0.9}]}))
        assert _promote(admin, other, "PROD").status_code == 409
        no_reason = _promote(admin, other, "PROD", override=True)
        assert no_reason.status_code == 422 and no_reason.json()["data"]["errors"][0]["field"] == "reason"
        reason = "incident 42: the fix must ship before the evaluation finishes"
        assert _promote(admin, other, "PROD", override=True, reason=reason).status_code == 200
        audit = data(admin.get("/audit/logs", params={"action": "serving.endpoint.promote",
                                                      "resourceId": other}))["items"][0]
        assert audit["after"]["override"] is True and audit["after"]["gate"]["passed"] is False
        assert reason in audit["detail"] and audit["actorName"] == "bootstrap"
