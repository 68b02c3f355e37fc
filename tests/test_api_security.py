"""API keys (hashed, constant-time compared), the open /health, per-key rate limits, and the
refusal to listen beyond loopback without keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from backend.api.app import create_app
from backend.api.security import KeyRing, RateLimiter, digest, is_loopback
from backend.settings import Settings
from tests.support import assert_problem

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def keyed_api(tmp_path: Path, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=db_url,
        api_keys=["dev-key-1"],
        api_key_hashes=[digest("stored-key-2")],
        api_rate_limit_per_minute=5,
    )
    app = create_app(settings, reconcile=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as c,
    ):
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_every_route_but_health_needs_a_valid_key(keyed_api: httpx.AsyncClient) -> None:
    missing = assert_problem(await keyed_api.get("/api/v1/crews"), 401, "UNAUTHORIZED")
    assert "key" in missing["detail"]
    refused = await keyed_api.get("/api/v1/crews", headers=bearer("wrong"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert_problem(
        await keyed_api.get("/metrics", headers={"Authorization": "Basic abc"}), 401, "UNAUTHORIZED"
    )
    assert (await keyed_api.get("/api/v1/crews", headers=bearer("dev-key-1"))).status_code == 200
    assert (await keyed_api.get("/api/v1/crews", headers=bearer("stored-key-2"))).status_code == 200
    health = await keyed_api.get("/health")
    assert health.status_code in (200, 503) and "database" in health.json()  # open, whatever its state


async def test_each_key_has_its_own_rate_limit(keyed_api: httpx.AsyncClient) -> None:
    answers = [
        (await keyed_api.get("/api/v1/crews", headers=bearer("dev-key-1"))).status_code for _ in range(6)
    ]
    assert answers == [200] * 5 + [429]
    limited = await keyed_api.get("/api/v1/crews", headers=bearer("dev-key-1"))
    assert_problem(limited, 429, "API_RATE_LIMITED")
    assert int(limited.headers["retry-after"]) >= 1
    assert (await keyed_api.get("/api/v1/crews", headers=bearer("stored-key-2"))).status_code == 200


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one per second, bursts of 60
    assert all(limiter.take("k") == 0.0 for _ in range(60))
    assert limiter.take("k") == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("k") == 0.0
    assert RateLimiter(0).take("k") == 0.0  # 0: no limit


def test_key_ring_accepts_only_known_bearer_keys() -> None:
    ring = KeyRing([digest("a-key"), digest("b-key").upper()])
    assert ring.identify("Bearer a-key") == digest("a-key")
    assert ring.identify("bearer b-key") == digest("b-key")
    assert ring.identify("Bearer nope") is None
    assert ring.identify("a-key") is None and ring.identify(None) is None
    assert not KeyRing([]).enabled


@pytest.mark.parametrize(
    ("written", "keys"),
    [("one-key", ["one-key"]), ("k1, k2", ["k1", "k2"]), ('["k1", "k2"]', ["k1", "k2"]), ("", [])],
)
def test_keys_from_the_environment_as_written(
    written: str, keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain key, as temporal-docker-compose.yml sets it, is one key (not a JSON document).
    monkeypatch.setenv("CREWRUN_API_KEYS", written)
    monkeypatch.setenv("CREWRUN_API_KEY_HASHES", written)
    settings = Settings()
    assert settings.api_keys == keys and settings.api_key_hashes == keys


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("api.example", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_api_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CREWRUN_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
