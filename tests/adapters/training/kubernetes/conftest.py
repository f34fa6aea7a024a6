"""The kmock API server (a test double of Kubernetes) each training-runtime test starts fresh."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.adapters.serving.kube_double import KubeDouble, open_kube_double


@pytest.fixture
async def kube() -> AsyncIterator[KubeDouble]:
    async with open_kube_double() as double:
        yield double
