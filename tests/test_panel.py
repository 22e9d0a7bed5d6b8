"""The control panel (issue 11 §4) in headless Chromium (Debian's, driven by Playwright) against a real
`sftpsms serve --http-port 0`: log in, upload a file over SFTP and watch it appear with its messages
and receipts, add an opt-out and see the next file skip it, create and revoke a key. Each page's
screenshot is saved under test-output/panel/ (or $SFTPSMS_TEST_OUTPUT/panel/) for review."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import paramiko
import pytest

from tests.service import Service, running_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")

OUTPUT = Path(os.environ.get("SFTPSMS_TEST_OUTPUT", Path(__file__).resolve().parent.parent / "test-output")) / "panel"
GATEWAYS = """
[gateways.simulator]
delay = 0.2
failed_per_mille = 0
expired_per_mille = 0
reply_per_mille = 1000
reply_text = "Thanks!"
"""
ENV = {"SFTPSMS_LOGIN_LOCKOUT_AFTER": "3", "SFTPSMS_LOGIN_SLOWDOWN_AFTER": "2", "SFTPSMS_LOGIN_SLOWDOWN_BASE": "0.05"}


def document(numbers: list[str]) -> bytes:
    contacts = [{"msisdn": n, "customerId": f"C{i}"} for i, n in enumerate(numbers)]
    return json.dumps({"Version": 7, "Message_Template": "Your parcel is on its way", "Contacts": contacts}).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("panel") / "data"
    data.mkdir()
    (data / "gateways.toml").write_text(GATEWAYS)
    with running_service(data, "--http-port", "0", env=ENV) as running:
        assert running.http_port
        running.add_account("acme", credits=500)
        running.add_account("rival", credits=10)
        running.add_account("victim", credits=10)
        made = running.cli("account", "create", "acme-sub", "--password", "sub-pw", "--parent", "acme")
        assert made.returncode == 0, made.stderr
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def base(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def log_in(browser: Any, service: Service, username: str = "acme", password: str = "secret-pw") -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.goto(base(service) + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/files$"))
    return page


def sftp_put(service: Service, name: str, data: bytes) -> dict[str, Any]:
    with service.paramiko("acme") as sftp, sftp.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(data)
    return service.wait_report("acme", name)[1]


def test_log_in_upload_watch_messages_and_receipts(service: Service, browser: Any) -> None:
    page = log_in(browser, service)
    shot(page, "01-files-empty")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["sftpsms_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert page.inner_text("#whoami") == "acme"

    report = sftp_put(service, "parcels.json", document(["27831230001", "27831230002", "27831230003"]))
    assert report["messages_queued"] == 3
    deadline = time.monotonic() + 30
    while page.locator("#files tr[data-file]").count() == 0:  # a new file shows on the next load
        assert time.monotonic() < deadline
        page.reload()
    row = page.locator(f"#files tr[data-file='{report['file_id']}']")
    assert "parcels.json" in row.inner_text() and "processed" in row.inner_text()
    # The progress cell is updated in place by the page's script (no reload) until all are delivered.
    from playwright.sync_api import expect

    expect(page.locator(f"[data-progress='{report['file_id']}']")).to_contain_text("3 delivered", timeout=30_000)
    shot(page, "02-files-delivered")

    page.click(f"#files tr[data-file='{report['file_id']}'] a")
    page.wait_for_selector("#messages")
    deadline = time.monotonic() + 30
    while page.locator("#messages .status.delivered").count() < 3 or page.locator("#messages .reply").count() < 3:
        assert time.monotonic() < deadline, page.inner_text("#messages")
        time.sleep(0.3)
        page.reload()
    text = page.inner_text("#messages")
    assert "27831230001" in text and "Your parcel is on its way" in text and "Thanks!" in text
    assert page.inner_text("[data-count=delivered]") == "3"
    shot(page, "03-file-messages")

    page.goto(base(service) + "/search?msisdn=083+123+0002")
    assert "parcels.json" in page.inner_text("#results")
    shot(page, "04-search")
    page.goto(base(service) + "/replies")
    assert page.locator("#replies tbody tr").count() >= 3
    shot(page, "05-replies")
    page.goto(base(service) + "/chart?by=hour")
    assert page.locator("#chart rect.bar").count() >= 1
    assert "100.0%" in page.inner_text("#activity")
    shot(page, "06-chart")
    page.goto(base(service) + "/ledger")
    assert "reserved" in page.inner_text("#ledger")
    shot(page, "07-ledger")
    report_json = page.request.get(base(service) + f"/files/{report['file_id']}/report.json")
    assert report_json.json() == report
    original = page.request.get(base(service) + f"/files/{report['file_id']}/download")
    assert original.body() == document(["27831230001", "27831230002", "27831230003"])


def test_an_opt_out_added_in_the_panel_is_skipped_by_the_next_file(service: Service, browser: Any) -> None:
    page = log_in(browser, service)
    page.goto(base(service) + "/optouts")
    page.fill("#add-optouts textarea", "083 123 0005")
    page.click("#add-optouts button")
    page.wait_for_selector("#optouts")
    assert "27831230005" in page.inner_text("#optouts") and "opted out" in page.inner_text(".flash")
    shot(page, "08-optouts")
    report = sftp_put(service, "after-optout.json", document(["27831230004", "27831230005"]))
    assert report["optouts_skipped"] == 1 and report["messages_queued"] == 1
    assert [e["code"] for e in report["contact_errors"]] == ["MSISDN.Optout"]
    page.goto(base(service) + "/files")
    row = page.locator(f"#files tr[data-file='{report['file_id']}']")
    assert row.locator("td").nth(6).inner_text() == "1"  # the Opt-outs column
    page.goto(base(service) + "/optouts")
    page.click("#optouts button[aria-label='opt 27831230005 back in']")
    page.wait_for_selector(".flash")
    assert page.locator("#optouts").count() == 0 or "27831230005" not in page.inner_text("#optouts")


def test_a_key_is_created_shown_once_and_revoked(service: Service, browser: Any) -> None:
    page = log_in(browser, service)
    page.goto(base(service) + "/keys")
    page.select_option("#create-key select", "rest")
    page.click("#create-key button")
    page.wait_for_selector("#new-key")
    key_id, secret = page.inner_text("#new-key-id"), page.inner_text("#new-key-secret")
    assert key_id.startswith("ak_") and len(secret) > 20
    shot(page, "09-key-created")
    assert httpx.get(base(service) + "/api/v1/credits", auth=(key_id, secret)).status_code == 200
    page.goto(base(service) + "/keys")
    assert secret not in page.content()  # shown once: never again
    assert page.locator("#channels").inner_text().count("on") >= 1
    page.click(f"#keys tr[data-key='{key_id}'] button")
    page.wait_for_selector(".flash")
    assert "revoked" in page.inner_text(".flash")
    assert page.locator(f"#keys tr[data-key='{key_id}'] td").nth(3).inner_text() != ""
    shot(page, "10-key-revoked")
    assert httpx.get(base(service) + "/api/v1/credits", auth=(key_id, secret)).status_code == 401


def test_the_other_pages_render(service: Service, browser: Any) -> None:
    page = log_in(browser, service)
    for path, name in (("/subaccounts", "11-subaccounts"), ("/webhooks", "12-webhooks")):
        page.goto(base(service) + path)
        assert page.locator("main h1").count() == 1
        shot(page, name)
    page.goto(base(service) + "/subaccounts")
    page.select_option("#transfer select", "acme-sub")
    page.fill("#transfer input[name=amount]", "5")
    page.click("#transfer button")
    page.wait_for_selector(".flash")
    assert "5 credits moved to acme-sub" in page.inner_text(".flash")
    page.goto(base(service) + "/webhooks")
    page.fill("#add-webhook input[name=url]", "http://127.0.0.1:9/hook")
    page.click("#add-webhook button")
    page.wait_for_selector("#webhook-secret")
    assert "whsec_" in page.inner_text("#webhook-secret")
    page.goto(base(service) + "/webhooks")
    page.locator("section.webhook form").filter(has_text="Remove").locator("button").click()
    page.wait_for_selector(".flash")


def test_forms_need_their_csrf_token_and_cookies_are_signed(service: Service, browser: Any) -> None:
    page = log_in(browser, service)
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}["sftpsms_session"]
    with httpx.Client(base_url=base(service), cookies={"sftpsms_session": cookie}, follow_redirects=False) as client:
        assert client.get("/optouts").status_code == 200
        forged = client.post("/optouts", data={"action": "add", "msisdns": "0831230009"})
        assert forged.status_code == 403
        wrong = client.post("/optouts", data={"action": "add", "msisdns": "0831230009", "csrf": "guess"})
        assert wrong.status_code == 403
    with httpx.Client(base_url=base(service), cookies={"sftpsms_session": cookie[:-2] + "xx"}, follow_redirects=False) as client:
        assert client.get("/optouts").headers["location"].startswith("/login")  # a tampered cookie is no session
    with httpx.Client(base_url=base(service), follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/login"
        assert client.get("/files").headers["location"].startswith("/login?next=")
        assert client.post("/login", data={"username": "acme", "password": "secret-pw"}).status_code == 403
        # Every page and form without a session goes to the login page (PageSession), the progress
        # script's JSON is a 401: the session is checked before the form is read.
        for method, path in (("GET", "/keys"), ("POST", "/keys"), ("POST", "/webhooks"), ("GET", "/chart"),
                             ("POST", "/files/x/control"), ("GET", "/files/x/download")):
            answer = client.request(method, path, data={"action": "revoke", "key_id": "ak_x"})
            assert answer.status_code == 303 and answer.headers["location"] == f"/login?next={quote(path, safe='')}"
        assert client.get("/progress", params={"file": "x"}).status_code == 401
    page.goto(base(service) + "/login?next=//evil.example/x")
    page.fill("input[name=username]", "acme")
    page.fill("input[name=password]", "secret-pw")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/files$"))  # never sent off the site


def test_other_accounts_files_are_not_found_and_a_parent_sees_its_sub_account(service: Service, browser: Any) -> None:
    report = sftp_put(service, "acme-private.json", document(["27831230007"]))
    page = log_in(browser, service, "rival", "secret-pw")
    for path in (f"/files/{report['file_id']}", f"/files/{report['file_id']}/download",
                 f"/files/{report['file_id']}/report.json", "/files?account=acme", "/ledger?account=acme"):
        answer = page.goto(base(service) + path)
        assert answer is not None and answer.status == 404, path
    progress = page.request.get(base(service) + f"/progress?file={report['file_id']}")
    assert progress.json() == {}
    parent = log_in(browser, service)
    parent.goto(base(service) + "/files?account=acme-sub")
    assert parent.locator("h1").inner_text() == "Files of acme-sub"
    sub = log_in(browser, service, "acme-sub", "sub-pw")
    assert sub.goto(base(service) + "/files?account=acme").status == 404  # nor a child its parent's


def test_failed_panel_logins_lock_out_sftp_too(service: Service, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    for _ in range(3):
        page.goto(base(service) + "/login")
        page.fill("input[name=username]", "victim")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
        page.wait_for_selector(".error")
    page.goto(base(service) + "/login")
    page.fill("input[name=username]", "victim")
    page.fill("input[name=password]", "secret-pw")  # the right password, now too late
    page.click("button[type=submit]")
    page.wait_for_selector(".error")
    assert "too many failed logins" in page.inner_text(".error")
    shot(page, "13-locked-out")
    with pytest.raises(paramiko.AuthenticationException):
        with service.paramiko("victim"):
            pass


def test_a_scheduled_file_is_paused_and_cancelled_from_its_page(service: Service, browser: Any) -> None:
    contacts = [{"msisdn": "27831230011"}, {"msisdn": "27831230012"}]
    later = json.dumps({"Version": 7, "Start": "2099-01-01 08:00", "Message_Template": "Later", "Contacts": contacts})
    report = sftp_put(service, "tomorrow.json", later.encode())
    balance = service.store().account("acme").balance
    page = log_in(browser, service)
    page.goto(base(service) + f"/files/{report['file_id']}")
    page.click("#control button[value=pause]")
    page.wait_for_selector(".flash", timeout=60_000)
    assert "paus" in page.inner_text(".flash").lower()
    assert page.locator("#control button[value=resume]").count() == 1
    page.click("#control button[value=cancel]")
    page.wait_for_selector(".flash", timeout=60_000)
    assert "cancel" in page.inner_text(".flash").lower()
    assert page.locator("#control button").count() == 0 and "cancelled" in page.inner_text("#control")
    shot(page, "14-file-cancelled")
    assert service.store().account("acme").balance == balance + 2
