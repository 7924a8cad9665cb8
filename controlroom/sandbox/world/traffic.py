"""Client traffic for the sandbox's HTTP server, so its latency and error-rate metrics
describe something: a few real requests per tick, as the platform's apps would make."""

from __future__ import annotations

import asyncio
import logging

import httpx

from controlroom.sandbox.world.scenarios import PROVIDERS

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_S = 5.0


async def generate_traffic(base_url: str, api_key: str, *, interval_s: float = 2.0) -> None:
    """Until cancelled: each tick, a REST read twice and every provider's validate once, with
    the anon key in `apikey` and as the bearer (as supabase-js sends it)."""
    read = "/rest/v1/pos_integrations_location?select=location_id&limit=1"
    paths = [read, read] + [f"/functions/v1/pos-{provider}/validate" for provider in PROVIDERS]
    headers = {"apikey": api_key, "Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        while True:
            results = await asyncio.gather(*(client.get(path) for path in paths), return_exceptions=True)
            for path, result in zip(paths, results):
                if isinstance(result, Exception):
                    log.debug("sandbox traffic to %s failed: %s", path, result)
            await asyncio.sleep(interval_s)
