"""The sandbox answers as the Supabase platform does, over a real socket: the OpenAPI root is
for privileged keys only, edge functions verify a JWT at a gateway whose answers carry no
function mark, a rotated-out location token passes the gateway and is refused by the
function itself (with its mark) — and the Token Zombie probe tells the two 401s apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from controlroom.checks import ProbeContext, run_probe
from controlroom.config.loader import load_default_runbook
from controlroom.sandbox.http.app import FUNCTION_HEADER
from controlroom.sandbox.http.server import HttpServerProcess, sign_jwt

from http_fixtures import bearer, make_zombie, server, shared_dsn  # noqa: F401 - fixtures
from probe_support import make_loaded

ROTATE = "/functions/v1/pos-credentials-rotation"
OTHER_PROJECT_SECRET = "another project's JWT secret, 32 bytes or more"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(server: HttpServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        yield http


def test_the_keys_are_the_platforms_kinds(server: HttpServerProcess) -> None:
    settings = server.settings
    for key, role in ((settings.anon_key, "anon"), (settings.service_key, "service_role")):
        claims = jwt.decode(key, settings.jwt_secret, algorithms=["HS256"])
        assert claims["role"] == role and claims["iss"] and claims["exp"] > claims["iat"]
    assert settings.publishable_key.startswith("sb_publishable_") and settings.secret_key.startswith("sb_secret_")
    assert settings.burst_key.startswith("sb_publishable_") and settings.burst_key != settings.publishable_key


async def test_the_rest_root_is_for_privileged_keys_only(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    settings = server.settings
    for key in (settings.anon_key, settings.publishable_key):
        refused = await client.get("/rest/v1/", headers={"apikey": key})
        assert refused.status_code == 403, refused.text
    for key in (settings.service_key, settings.secret_key):
        assert (await client.get("/rest/v1/", headers={"apikey": key})).status_code == 200
    # Without the trailing slash (supabase/supabase#45462): 401, whatever the key.
    assert (await client.get("/rest/v1", headers={"apikey": settings.service_key})).status_code == 401
    # A table the anon key may read answers it.
    table = await client.get("/rest/v1/pos_integrations_location?select=location_id&limit=1",
                             headers={"apikey": settings.anon_key})
    assert table.status_code == 200 and len(table.json()) == 1


async def test_a_function_without_authorization_is_refused_by_the_gateway(client: httpx.AsyncClient) -> None:
    response = await client.post(ROTATE, json={"test": True})
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Missing authorization header"}
    assert FUNCTION_HEADER not in response.headers


@pytest.mark.parametrize("token", ["not-a-jwt", "sb_publishable_abc", "WRONG_SECRET", "EXPIRED"])
async def test_a_malformed_or_foreign_jwt_is_refused_by_the_gateway(client: httpx.AsyncClient, server: HttpServerProcess,
                                                                    token: str) -> None:
    if token == "WRONG_SECRET":
        token = sign_jwt(OTHER_PROJECT_SECRET, "anon")
    elif token == "EXPIRED":
        token = sign_jwt(server.settings.jwt_secret, "anon", lifetime_s=-60)
    response = await client.post(ROTATE, headers=bearer(token), json={"test": True})
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Invalid JWT"}
    assert FUNCTION_HEADER not in response.headers


async def test_the_anon_jwt_reaches_the_function(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    response = await client.post(ROTATE, headers=bearer(server.settings.anon_key), json={"test": True})
    assert response.status_code == 200 and response.json()["rotation_capable"] is True
    assert response.headers[FUNCTION_HEADER] == "pos-credentials-rotation"


async def test_a_rotated_out_token_is_refused_by_the_function_itself(client: httpx.AsyncClient,
                                                                     server: HttpServerProcess) -> None:
    zombie, fresh = await make_zombie(client, server.settings, "loc-fudo-1")
    assert jwt.decode(zombie, server.settings.jwt_secret, algorithms=["HS256"])["sub"] == "loc-fudo-1"
    response = await client.post(ROTATE, headers=bearer(zombie), json={"location_id": "loc-fudo-1"})
    assert response.status_code == 401 and response.json() == {"error": "token_revoked"}
    assert response.headers[FUNCTION_HEADER] == "pos-credentials-rotation"


# -- the Token Zombie probe against the gateway and the function ---------------------------


async def zombie_probe(server: HttpServerProcess, dsn: str, **changes: Any):  # noqa: ANN201
    """The default runbook's Token Zombie item (its marker and auth) against this sandbox."""
    item = next(i for _, i in load_default_runbook().items() if i.kind == "token_zombie")
    data = {**item.model_dump(by_alias=True, exclude_none=True), **changes}
    secrets = {"supabase_api_key": server.settings.anon_key, "database_dsn": dsn}
    if "zombie" in changes:
        secrets["old_token"] = data.pop("zombie")
        data["zombie_token_secret"] = "old_token"
    loaded = make_loaded([data], urls={"supabase": server.base_url}, secrets=secrets)
    async with ProbeContext(loaded) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


async def test_the_probe_passes_on_the_functions_own_401(server: HttpServerProcess, shared_dsn: str) -> None:
    result = await zombie_probe(server, shared_dsn)
    assert result.status == "pass", result.evidence
    assert result.measured["http_status"] == 401 and result.measured["function_reached"] is True


async def test_the_probe_errs_on_a_gateway_only_401(server: HttpServerProcess, shared_dsn: str) -> None:
    """A zombie the gateway refuses (signed by another project) never reaches the function:
    fast, one attempt, nothing rotated — and still not a pass."""
    result = await zombie_probe(server, shared_dsn, zombie=sign_jwt(OTHER_PROJECT_SECRET, "authenticated", sub="x"))
    assert result.status == "error", result.evidence
    assert "the gateway refused the request; the function was never reached" in result.evidence
    assert result.measured["http_status"] == 401 and result.measured["function_reached"] is False
