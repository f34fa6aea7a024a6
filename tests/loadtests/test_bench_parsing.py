"""Unit tests for the benchmark's pure parts: wrk output parsing, tables, target checks, nginx config."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request

import pytest

from loadtests.report import Check, check_lines, ratio, ratio_table, throughput_table
from loadtests.streams import StreamResults, StreamTiming, content_event, distinct_arrivals
from loadtests.sweep import Series, best_result
from loadtests.targets import evaluate, summarize_spacing
from loadtests.upstream_nginx import STREAM_CHUNKS, canned_sse_body, nginx_config, run_nginx
from loadtests.wrk import WrkError, WrkResult, lua_script, parse_duration_ms, parse_wrk

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:4000/v1/chat/completions
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    27.01ms   12.33ms 210.27ms   90.12%
    Req/Sec     2.40k   150.22     2.61k    81.00%
  Latency Distribution
     50%   25.35ms
     75%   28.01ms
     90%   33.40ms
     99%  210.27ms
  23921 requests in 10.01s, 10.04MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   2389.91
Transfer/sec:      1.00MB
"""


def _result(rps: float, p50: float = 1.0, p99: float = 2.0, errors: int = 0) -> WrkResult:
    return WrkResult(requests=int(rps * 10), duration_s=10.0, rps=rps, p50_ms=p50, p99_ms=p99, non_2xx=errors)


def _series(key: str, label: str, points: dict[int, WrkResult]) -> Series:
    return Series(key, label, dict(points))


class TestParseWrk:
    def test_reads_throughput_percentiles_and_errors(self) -> None:
        r = parse_wrk(WRK_OUTPUT)
        assert r.requests == 23921
        assert r.duration_s == pytest.approx(10.01)
        assert r.rps == pytest.approx(2389.91)
        assert r.p50_ms == pytest.approx(25.35)
        assert r.p99_ms == pytest.approx(210.27)
        assert (r.non_2xx, r.socket_errors, r.errors) == (7, 5, 12)

    def test_clean_run_has_no_errors_and_mixed_units(self) -> None:
        text = WRK_OUTPUT.replace("     50%   25.35ms", "     50%  812.00us").replace(
            "     99%  210.27ms", "     99%    2.01s"
        )
        text = "\n".join(line for line in text.splitlines() if "errors" not in line and "Non-2xx" not in line)
        r = parse_wrk(text)
        assert r.p50_ms == pytest.approx(0.812)
        assert r.p99_ms == pytest.approx(2010.0)
        assert r.errors == 0

    def test_output_without_latency_table_is_rejected(self) -> None:
        text = "\n".join(line for line in WRK_OUTPUT.splitlines() if "%" not in line or "Stdev" in line)
        with pytest.raises(WrkError, match="--latency"):
            parse_wrk(text)

    def test_garbage_is_rejected(self) -> None:
        with pytest.raises(WrkError):
            parse_wrk("unable to connect to 127.0.0.1:4000 Connection refused")

    @pytest.mark.parametrize(
        ("text", "ms"), [("812.00us", 0.812), ("1.5ms", 1.5), ("2.00s", 2000.0), ("1.00m", 60000.0), ("3ms", 3.0)]
    )
    def test_durations(self, text: str, ms: float) -> None:
        assert parse_duration_ms(text) == pytest.approx(ms)

    @pytest.mark.parametrize("text", ["", "12", "ms", "1.2 ms", "-1ms", "1.2ns"])
    def test_bad_durations(self, text: str) -> None:
        with pytest.raises(WrkError):
            parse_duration_ms(text)


def test_lua_script_posts_the_body_with_headers() -> None:
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": 'say "hi"'}]})
    script = lua_script(body, headers={"Authorization": "Bearer k"})
    lines = script.splitlines()
    assert lines[0] == 'wrk.method = "POST"'
    assert 'wrk.path = "/v1/chat/completions"' in lines
    body_line = next(line for line in lines if line.startswith("wrk.body = "))
    assert json.loads(json.loads(body_line.removeprefix("wrk.body = "))) == json.loads(body)
    assert 'wrk.headers["Authorization"] = "Bearer k"' in lines


class TestTables:
    def test_throughput_table_rows_and_added_latency(self) -> None:
        a = _series("a", "nginx direct", {1: _result(20000, p50=0.03), 64: _result(40000, p50=1.2)})
        c = _series("c", "llmops gateway", {1: _result(1500, p50=0.53), 64: _result(2000, p50=30.0, errors=3)})
        table = throughput_table([a, c], [1, 64], direct_key="a")
        lines = table.strip().splitlines()
        assert lines[0] == "| c | series | req/s | p50 ms | p99 ms | added p50 ms | errors |"
        assert len(lines) == 2 + 4
        assert lines[2] == "| 1 | (a) nginx direct | 20,000 | 0.03 | 2.00 | 0 | 0 |"
        assert lines[3] == "| 1 | (c) llmops gateway | 1,500 | 0.53 | 2.00 | 0.50 | 0 |"
        assert lines[5] == "| 64 | (c) llmops gateway | 2,000 | 30.00 | 2.00 | 28.80 | 3 |"

    def test_missing_points_render_as_dashes_and_no_direct_column(self) -> None:
        d = _series("d", "LiteLLM", {})
        table = throughput_table([d], [16])
        assert "added" not in table
        assert table.strip().splitlines()[2] == "| 16 | (d) LiteLLM | - | - | - | - |"

    def test_long_keys_are_not_parenthesised(self) -> None:
        s = _series("asgi-aiohttp", "raw ASGI + aiohttp", {1: _result(10)})
        assert "| raw ASGI + aiohttp |" in throughput_table([s], [1])

    def test_ratio_and_ratio_table(self) -> None:
        b = _series("b", "floor", {64: _result(2000)})
        c = _series("c", "gw", {64: _result(1700), 1: _result(900)})
        assert ratio(c, b, 64) == pytest.approx(0.85)
        assert ratio(c, b, 1) is None
        assert ratio(c, None, 64) is None
        assert ratio(c, _series("z", "zero", {64: _result(0)}), 64) is None
        table = ratio_table([("(c)/(b)", c, b)], [1, 64])
        assert table.strip().splitlines()[-1] == "| (c)/(b) | - | 0.85 |"

    def test_check_lines(self) -> None:
        text = check_lines([Check("x", True, "ok"), Check("y", False, "bad"), Check("z", None, "n/a")])
        assert text.splitlines() == ["- PASS: x — ok", "- FAIL: y — bad", "- SKIP: z — n/a"]


def test_best_result_picks_the_least_disturbed_run() -> None:
    runs = [_result(300, p50=3.0), _result(100), _result(400, p50=4.0), _result(200)]
    best = best_result(runs)
    assert (best.rps, best.p50_ms) == (400, 4.0)
    assert best_result([_result(5)]).rps == 5
    with pytest.raises(ValueError):
        best_result([])


class TestStreams:
    def test_content_event(self) -> None:
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
        assert content_event(b"data: " + json.dumps(chunk).encode() + b"\n")
        assert not content_event(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n')
        assert not content_event(b'data: {"choices":[],"usage":{"total_tokens":3}}\n')
        assert not content_event(b"data: [DONE]\n")
        assert not content_event(b"data: {not json\n")
        assert not content_event(b": keep-alive\n")

    def test_distinct_arrivals_merges_bursts(self) -> None:
        assert distinct_arrivals([0.0, 0.02, 0.04]) == 3
        assert distinct_arrivals([0.0, 0.0002, 0.0004, 0.02]) == 2
        assert distinct_arrivals([]) == 0

    def test_canned_sse_body_has_every_chunk_and_done(self) -> None:
        lines = [line.encode() for line in canned_sse_body().splitlines() if line]
        assert sum(content_event(line) for line in lines) == STREAM_CHUNKS
        assert lines[-1] == b"data: [DONE]"


def _paced(n: int, gap_s: float, burst_after: int | None = None) -> StreamTiming:
    times = [i * gap_s if burst_after is None or i < burst_after else burst_after * gap_s for i in range(n)]
    return StreamTiming(tuple(times), done=True)


class TestTargets:
    def _streams(self, gateway: list[StreamTiming], ttft_added_ms: float) -> StreamResults:
        from loadtests.streams import TtftStats

        res = StreamResults(expected_gap_ms=20.0)
        res.ttft[("direct", 1)] = TtftStats(100, 3.0, 5.0)
        res.ttft[("gateway", 1)] = TtftStats(100, 3.0 + ttft_added_ms, 6.0)
        res.spacing["direct"] = [_paced(50, 0.020)]
        res.spacing["gateway"] = gateway
        return res

    def _series(self, c64: float, c1_p50: float) -> list[Series]:
        return [
            _series("a", "direct", {1: _result(20000, p50=0.03), 64: _result(40000)}),
            _series("b", "floor", {1: _result(2000), 64: _result(2000)}),
            _series("c", "gw", {1: _result(1500, p50=c1_p50), 64: _result(c64)}),
            _series("d", "litellm", {64: _result(50)}),
        ]

    def test_all_pass(self) -> None:
        checks = evaluate(self._series(1800, 0.5), self._streams([_paced(50, 0.020)], 0.5))
        assert [c.passed for c in checks] == [True, True, True, True, True, True]

    def test_failures_are_reported(self) -> None:
        buffered = _paced(50, 0.020, burst_after=10)  # chunks 10..49 arrive in one burst
        checks = evaluate(self._series(900, 1.5), self._streams([buffered], 2.5))
        assert [c.passed for c in checks] == [False, False, False, True, False, False]
        assert "(c)/(b) = 0.45" in checks[0].detail
        assert "(c)/(d) = 18.0x" in checks[1].detail
        assert "11 separate arrivals" in checks[5].detail

    def test_missing_series_skip(self) -> None:
        series = self._series(1800, 0.5)[:3]  # no LiteLLM
        checks = evaluate(series, StreamResults(expected_gap_ms=20.0))
        assert [c.passed for c in checks] == [True, None, True, True, None, None]

    def test_spacing_summary(self) -> None:
        s = summarize_spacing([_paced(50, 0.021), _paced(49, 0.020)], 20.0)
        assert (s.streams, s.min_events, s.max_events, s.min_arrivals) == (2, 49, 50, 49)
        assert s.max_error_ms == pytest.approx(1.0)


def test_nginx_config_splits_long_bodies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = nginx_config(tmp_path, 18081, 18082)
    assert "listen 127.0.0.1:18081;" in conf and "listen 127.0.0.1:18082;" in conf
    assert "worker_processes 1;" in conf and "access_log off;" in conf
    assert all(len(token) < 4096 for token in conf.split())  # nginx's per-token limit
    assert 'return 200 "${sse0}' in conf


@pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"), reason="nginx not installed")
def test_nginx_upstream_answers_chat_and_stream() -> None:
    with run_nginx() as up:
        for url, ctype in ((up.chat_url, "application/json"), (up.stream_url, "text/event-stream")):
            req = urllib.request.Request(url + "/chat/completions", data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
                assert resp.headers["content-type"] == ctype
                body = resp.read()
            if ctype == "application/json":
                assert json.loads(body)["usage"]["total_tokens"] == 17
            else:
                assert body.decode() == canned_sse_body()
    with pytest.raises(OSError):  # stopped on exit
        urllib.request.urlopen(up.chat_url + "/chat/completions", data=b"{}", timeout=2)


def test_render_writes_every_section() -> None:
    from loadtests.bench_doc import render
    from loadtests.streams import TtftStats

    series = [
        _series("a", "nginx direct", {1: _result(20000, p50=0.03), 64: _result(40000)}),
        _series("b", "floor", {1: _result(2000), 64: _result(2000)}),
        _series("c", "llmops gateway", {1: _result(1500, p50=0.5), 64: _result(1700)}),
    ]
    streams = StreamResults(expected_gap_ms=20.0)
    streams.ttft[("direct", 1)] = TtftStats(10, 2.0, 3.0)
    streams.ttft[("gateway", 1)] = TtftStats(10, 2.5, 4.0)
    streams.spacing["direct"] = [_paced(50, 0.02)]
    streams.spacing["gateway"] = [_paced(50, 0.02)]
    text = render(
        command=".venv/bin/python -m loadtests.bench --quick",
        series=series,
        sse_series=[],
        streams=streams,
        concurrencies=[1, 64],
        notes=["(d) LiteLLM proxy skipped: not installed"],
        gateway_config={"server": {"port": 4000}},
        pinning="servers on core 1",
    )
    for heading in ("# Benchmarks", "## Machine and command", "## Targets", "## Non-streaming", "## Streaming"):
        assert f"\n{heading}" in "\n" + text
    assert ".venv/bin/python -m loadtests.bench --quick" in text
    assert "- PASS: (c) ≥ 80% of (b) req/s at c=64 — (c)/(b) = 0.85" in text
    assert "- SKIP: (c) ≥ 20x (d) req/s at c=64" in text
    assert "| 1 | (c) llmops gateway | 1,500 | 0.50 | 2.00 | 0.47 | 0 |" in text
    assert "| (c) llmops / (b) floor | 0.75 | 0.85 |" in text
    assert "| 1 | gateway | 10 | 2.500 | 4.000 | 0.500 |" in text
    assert "- (d) LiteLLM proxy skipped: not installed" in text
    assert "port: 4000" in text


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_cpu_prefix_still_pins_to_other_cores_after_narrowing_own_affinity() -> None:
    from loadtests.procs import cpu_prefix

    cores = sorted(os.sched_getaffinity(0))
    original = set(cores)
    try:
        os.sched_setaffinity(0, {cores[0]})  # what the bench does before its stream phase
        assert cpu_prefix([cores[-1]]) == ["taskset", "-c", str(cores[-1])]
    finally:
        os.sched_setaffinity(0, original)
    assert cpu_prefix([10_000]) == []
    assert cpu_prefix(None) == []


class TestPaired:
    """The c=64 target on paired runs: the median decides, not the luckiest round."""

    def _runs(self, ratios: list[float]) -> list:
        from loadtests.paired import PairedRun

        return [PairedRun(_result(1000), _result(1000 * r), 250.0, 250.0 / r) for r in ratios]

    def test_median_decides_and_cpu_ratio_is_reported(self) -> None:
        from loadtests.paired import summarize_pairs

        s = summarize_pairs(self._runs([1.05, 0.7, 0.86, 0.9, 0.74]))
        assert s is not None and s.pairs == 5
        assert s.median_ratio == pytest.approx(0.86) and (s.min_ratio, s.max_ratio) == (0.7, 1.05)
        assert s.cpu_ratio == pytest.approx(0.86)
        series = TestTargets()._series(2100, 0.5)  # best rounds alone would say 1.05
        checks = evaluate(series, StreamResults(expected_gap_ms=20.0), s)
        assert checks[0].passed is True
        assert "median of 5 paired runs (c)/(b) = 0.86 (range 0.70 to 1.05)" in checks[0].detail
        assert "CPU time per request (b)/(c) = 0.86 (250 vs 291 µs)" in checks[0].detail
        assert "best sweep rounds (c)/(b) = 1.05" in checks[0].detail

    def test_a_lucky_best_round_does_not_pass_a_slow_median(self) -> None:
        from loadtests.paired import summarize_pairs

        s = summarize_pairs(self._runs([1.02, 0.7, 0.72, 0.75, 0.71]))
        checks = evaluate(TestTargets()._series(2040, 0.5), StreamResults(expected_gap_ms=20.0), s)
        assert checks[0].passed is False

    def test_no_pairs_falls_back_to_best_rounds(self) -> None:
        from loadtests.paired import summarize_pairs

        assert summarize_pairs([]) is None
        checks = evaluate(TestTargets()._series(1700, 0.5), StreamResults(expected_gap_ms=20.0), None)
        assert checks[0].passed is True and checks[0].detail.startswith("(c)/(b) = 0.85")

    def test_process_cpu_time_is_read_from_proc(self) -> None:
        from loadtests.paired import process_cpu_s

        t0 = process_cpu_s(os.getpid())
        end = time.process_time() + 0.05
        while time.process_time() < end:  # burn a little CPU
            pass
        t1 = process_cpu_s(os.getpid())
        assert t0 is not None and t1 is not None and t1 > t0
        assert process_cpu_s(2**22 + 12345) is None  # no such process

    def test_paired_table_marks_the_order(self) -> None:
        from loadtests.bench_doc import paired_table

        text = paired_table(self._runs([0.9, 0.8]))
        assert "| 1 | (b) | 1,000 | 900 | 0.90 | 250 | 278 |" in text
        assert "| 2 | (c) | 1,000 | 800 | 0.80 | 250 | 312 |" in text


def test_rewriting_the_report_keeps_sections_other_benchmarks_own() -> None:
    from loadtests.bench_doc import keep_sections

    owned = "<!-- dataset_rss:start (written by x) -->\n| a | b |\n<!-- dataset_rss:end -->\n"
    old = "# Benchmarks\n\nold table\n\n" + owned
    new = keep_sections("# Benchmarks\n\nnew table\n", old)
    assert "new table" in new and "old table" not in new
    assert new.endswith(owned)
    assert keep_sections(new, new) == new  # already there: not duplicated
