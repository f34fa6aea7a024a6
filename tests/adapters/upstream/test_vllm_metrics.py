import aiohttp
import msgspec

from adapters.upstream import Backend, CircuitBreaker
from adapters.upstream.vllm_metrics import metrics_url, parse_waiting, scrape_once

TEXT = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3.0
vllm:num_requests_waiting{model_name="b"} 4.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 9.0
"""


def test_metrics_url_strips_v1() -> None:
    assert metrics_url("http://pod:8000/v1") == "http://pod:8000/metrics"
    assert metrics_url("http://pod:8000/") == "http://pod:8000/metrics"


def test_parse_waiting_sums_label_sets() -> None:
    assert parse_waiting(TEXT) == 7.0


async def test_scrape_reads_the_mock_and_survives_a_dead_replica(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, vllm_waiting=12)
    live = Backend(url=mock.url, breaker=CircuitBreaker())
    dead = Backend(url="http://127.0.0.1:9/v1", breaker=CircuitBreaker(), waiting=2)
    async with aiohttp.ClientSession() as s:
        await scrape_once(s, live)
        await scrape_once(s, dead)
    assert live.waiting == 12
    assert dead.waiting == 2  # a failed scrape keeps the last value
