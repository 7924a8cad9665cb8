"""`controlroom serve` in a real browser: headless Chromium (Debian's) driven by Playwright.

A sandbox with the shared journal store; an operator drives its release with --write in a
real pseudo-terminal; `controlroom serve` runs as a real subprocess on a config that says
write_by_default = true. The URL it prints opens the control room in Chromium: the verdict and
the checklist show, the operator's attestation arrives live, a modifying key is refused with
the READ-ONLY message. Without the token, or with a wrong one, every path answers 401, the
websocket too.

Also: serve's one-line errors (a port in use, an address it cannot listen on, a bad or missing
config, --write), and which of the environment a browser's control room gets.

The terminal is xterm.js drawing on a canvas: the test reads the text of its buffer, exposed
by the one line of the served textual.js that opens the terminal (patched on its way to this
browser only). A screenshot is left in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from controlroom.cli.serve import read_only, watcher_environment, watcher_secrets
from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from pty_support import Terminal
from test_shared_terminals import attest_next

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own probe starts it: no sandbox as root, and nothing that phones out.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPENS_TERMINAL = "this.terminal.open(e)"  # in textual-serve's textual.js
READ_BUFFER = """() => {
    const term = window.controlroomTerminal;
    if (!term) return "";
    const buffer = term.buffer.active, lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\\n");
}"""

pytestmark = pytest.mark.timeout(180)


def chromium_or_skip() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's (as root: apt-get install -y chromium "
                    "chromium-driver; .ci/run does it when it runs as root and can)")
    pytest.importorskip("playwright", reason="playwright (the test extra) is not installed")


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=30, simulate=False, journal_store="postgres") as running:
        yield running


def writable_config(sandbox: Sandbox, directory: Path) -> Path:
    """The sandbox's config, but one that opens every control room with write access."""
    text = sandbox.config_path.read_text(encoding="utf-8")
    text = text.replace("write_by_default = false", "write_by_default = true")
    text = text.replace('env_file = "sandbox.env"', f'env_file = "{sandbox.env_path}"')
    assert "write_by_default = true" in text and str(sandbox.env_path) in text
    path = directory / "writable.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def start_serve(config: Path, journals: Path) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    env = {**os.environ, "CONTROLROOM_JOURNAL_DIR": str(journals)}
    env.pop("CONTROLROOM_HOST", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlroom", "serve", "--config", str(config), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    assert process.stdout is not None
    printed: list[str] = []
    while not printed or not printed[-1].startswith("open: "):
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, f"serve ended before printing its URL:\n{''.join(printed)}"
        printed.append(line.decode())
    url = printed[-1].removeprefix("open: ").strip()
    return process, url, printed


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.terminate()
    return await asyncio.wait_for(process.wait(), 30)


async def terminal_text(page: object, wanted: str | re.Pattern[str], timeout: float = 30.0) -> str:
    """The browser terminal's text once it shows `wanted` (a plain string or a pattern)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = await page.evaluate(READ_BUFFER)  # type: ignore[attr-defined]
        found = wanted.search(text) if isinstance(wanted, re.Pattern) else wanted in " ".join(text.split())
        if found:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{wanted!r} never showed in the browser; it shows:\n{text}")


async def test_a_browser_watches_the_release_read_only_behind_the_token(sandbox: Sandbox, tmp_path: Path) -> None:
    chromium_or_skip()
    from playwright.async_api import async_playwright

    started = time.monotonic()
    config = writable_config(sandbox, tmp_path)
    driver_env = {**os.environ, "CONTROLROOM_JOURNAL_DIR": str(tmp_path / "driver"), "TERM": "xterm-256color"}
    driver = Terminal([sys.executable, "-m", "controlroom", "--config", str(sandbox.config_path), "--host", "bastion-1",
                       "--write"], driver_env, tmp_path)
    serve = None
    try:
        driver.wait_for_text("YOU DRIVE")
        serve, url, printed = await start_serve(config, tmp_path / "browser")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43}", url), printed
        base, token = url.split("/?token=")
        assert "CONTROLROOM_SANDBOX" not in "".join(printed)  # no secret, no secret's name

        # Without the token, or with a wrong one: 401 on every path, the websocket too.
        async with httpx.AsyncClient(timeout=10) as client:
            for path in ("/", "/?token=", f"/?token={token[:-1]}x", "/ws", f"/ws?token={token}x",
                         "/static/js/textual.js", "/download/x"):
                answer = await client.get(base + path)
                assert answer.status_code == 401, (path, answer.status_code)
                assert "<html" not in answer.text.lower()
            handshake = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
            assert (await client.get(base + "/ws", headers=handshake)).status_code == 401
            wrong = {**handshake, "Cookie": "controlroom_token=wrong"}
            assert (await client.get(base + "/ws", headers=wrong)).status_code == 401
            # The right token as a cookie, from another site's page: no websocket either.
            foreign = {**handshake, "Origin": "http://evil.example", "Cookie": f"controlroom_token={token}"}
            assert (await client.get(base + "/ws", headers=foreign)).status_code == 403
            injected = await client.get(url, headers={"Host": '127.0.0.1"><script>alert(1)</script>'})
            assert injected.status_code == 400 and "<script>" not in injected.text
            page_answer = await client.get(url)
            assert page_answer.status_code == 200
            cookie = page_answer.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 900})

                async def expose_terminal(route: object) -> None:
                    response = await route.fetch()  # type: ignore[attr-defined]
                    body = await response.text()
                    assert OPENS_TERMINAL in body, "textual-serve's textual.js changed: find where it opens the terminal"
                    body = body.replace(OPENS_TERMINAL, "(window.controlroomTerminal=this.terminal).open(e)", 1)
                    await route.fulfill(response=response, body=body)  # type: ignore[attr-defined]

                await page.route("**/static/js/textual.js", expose_terminal)
                answer = await page.goto(url)
                assert answer is not None and answer.status == 200
                opened = time.monotonic()
                # The verdict, the read-only badge, the driver it watches, and the checklist.
                text = await terminal_text(page, "READ-ONLY")
                shown = time.monotonic() - opened
                text = await terminal_text(page, "Token Zombie Test")
                text = await terminal_text(page, "bastion-1")
                assert re.search(r"\b(PENDING|GO|NO-GO|DELAYED)\b", text), text
                for row in ("Security & Credentials", "Credential Rotation", "PASS", "WAIT"):
                    await terminal_text(page, row)  # each as the probes land (a frame may be half drawn when read)
                # The browser's control room has the secrets the view reads, and not the others.
                session = next(p for p in psutil.Process(serve.pid).children(recursive=True)
                               if "controlroom.cli.serve" in " ".join(p.cmdline()))
                environment = session.environ()
                assert {"CONTROLROOM_SANDBOX_DSN", "CONTROLROOM_SANDBOX_API_KEY"} <= set(environment)
                for withheld in ("ADMIN_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY",
                                 "STATUSPAGE_API_KEY"):
                    assert f"CONTROLROOM_SANDBOX_{withheld}" not in environment
                assert environment["CONTROLROOM_HOST"].endswith("-browser")

                driver.wait_for_text("+1 watch", timeout=10)  # the browser's control room watches
                # The driver attests in its terminal; the browser shows it live.
                attest_next(driver)
                await terminal_text(page, "attested by")

                # A modifying key: refused, with the engine's read-only message.
                await page.focus(".xterm-helper-textarea")
                await page.keyboard.press("a")
                await terminal_text(page, "READ-ONLY: attest is a decision")
                await page.keyboard.press("!")  # never a shell on the bastion from a browser
                await terminal_text(page, "No shell here: this is a browser")
                await page.screenshot(path=str(tmp_path / "browser.png"))

                # Stopping serve with a browser still on it ends that browser's control room.
                stopping = time.monotonic()
                assert await stop(serve) == 0
                stopped = time.monotonic() - stopping
                psutil.wait_procs([session], timeout=10)
                assert not session.is_running() or session.status() == psutil.STATUS_ZOMBIE
            finally:
                await browser.close()
        print(f"\nbrowser test: page to first control-room text {shown:.1f} s; serve stopped in {stopped:.1f} s "
              f"with a browser on it; whole test {time.monotonic() - started:.1f} s")
    finally:
        if serve is not None:
            assert await stop(serve) == 0
        if driver.process.poll() is None:
            driver.process.terminate()  # closes as `q` does
            driver.process.wait(timeout=15)


async def test_serve_says_in_one_line_when_the_port_is_taken_or_the_config_is_bad(sandbox: Sandbox,
                                                                                 tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    broken = tmp_path / "broken.toml"
    broken.write_text("[environment]\nname = 3\n", encoding="utf-8")
    try:
        for config, extra, expected in (
                (sandbox.config_path, ["--port", str(port)], f"port {port} on 127.0.0.1 is in use"),
                (sandbox.config_path, ["--host", "no-such-host.invalid"], "cannot listen on no-such-host.invalid"),
                (broken, [], "broken.toml"),
                (tmp_path / "missing.toml", [], "missing.toml")):
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "controlroom", "serve", "--config", str(config), *extra],
                capture_output=True, text=True, timeout=60)
            assert result.returncode == 2, (extra, result.stdout, result.stderr)
            assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert "Traceback" not in result.stderr and "open: " not in result.stdout
    finally:
        taken.close()
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "controlroom", "--write", "serve", "--config", str(sandbox.config_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "serve is always read-only: drop --write" in result.stderr, result.stderr


async def test_a_browsers_control_room_gets_the_secrets_the_view_reads_and_no_other(sandbox: Sandbox) -> None:
    loaded = load_config(sandbox.config_path)
    serving = {"PATH": "/usr/bin", "HOME": "/home/ic", "LC_TIME": "C", "HTTPS_PROXY": "http://proxy:3128",
               "CONTROLROOM_JOURNAL_DIR": "/journals", "AWS_SECRET_ACCESS_KEY": "not-for-the-view",
               # A secret in the real environment as well as in the env_file: still withheld.
               "CONTROLROOM_SANDBOX_ADMIN_TOKEN": "admin-from-the-environment"}
    assert watcher_secrets(loaded) == ["burst_api_key", "database_dsn", "pagerduty_api_token", "supabase_api_key"]
    env = watcher_environment(loaded, serving)
    secrets = {name: value for name, value in sandbox.secret_environment().items() if name in env}
    assert sorted(secrets) == ["CONTROLROOM_SANDBOX_API_KEY", "CONTROLROOM_SANDBOX_BURST_API_KEY",
                               "CONTROLROOM_SANDBOX_DSN", "CONTROLROOM_SANDBOX_PAGERDUTY_API_TOKEN"]
    assert all(env[name] == value for name, value in secrets.items())  # read from the env_file
    assert {"PATH", "HOME", "LC_TIME", "HTTPS_PROXY", "CONTROLROOM_JOURNAL_DIR"} <= set(env)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "CONTROLROOM_SANDBOX_ADMIN_TOKEN" not in env
    assert env["CONTROLROOM_HOST"].endswith("-browser")
    writable = replace(loaded, environment=loaded.environment.model_copy(update={"write_by_default": True}))
    assert read_only(writable).environment.write_by_default is False
