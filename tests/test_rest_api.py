"""The REST API (issue 11 §3) against a real `sftpsms serve --http-port 0`, with httpx as the client:
Basic authentication with rest keys, files and their reports, originals and messages, the history,
opt-outs, uploads through the same pipeline as SFTP, and every route tried as another account."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service import Service, running_service

FILE = {
    "Version": 7,
    "Message_Template": "Hi @@value1@@, your statement is ready",
    "Contacts": [
        {"msisdn": "0831234501", "customerId": "C1", "values": {"value1": "Thandi"}},
        {"msisdn": "27831234502", "customerId": "C2", "values": {"value1": "Sipho"}},
        {"msisdn": "not a number", "customerId": "C3"},
    ],
}


class Api:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.base = f"http://127.0.0.1:{service.http_port}"
        self.keys: dict[str, tuple[str, str]] = {}

    def key(self, account: str, channel: str = "rest") -> tuple[str, str]:
        made = self.service.cli("apikey", "create", account, "--channel", channel, "--json")
        assert made.returncode == 0, made.stderr
        data = json.loads(made.stdout)
        return data["key_id"], data["secret"]

    def client(self, account: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, auth=self.keys[account], timeout=30)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("rest") / "data"
    with running_service(data, "--http-port", "0") as service:
        assert service.http_port
        service.add_account("acme", credits=100)
        service.add_account("rival", credits=100)
        made = service.cli("account", "create", "acme-sub", "--password", "sub-pw", "--parent", "acme")
        assert made.returncode == 0, made.stderr
        api = Api(service)
        for account in ("acme", "rival", "acme-sub"):
            api.keys[account] = api.key(account)
        yield api


def sftp_upload(service: Service, account: str, name: str, document: dict[str, Any]) -> dict[str, Any]:
    with service.paramiko(account) as sftp, sftp.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(json.dumps(document).encode())
    return service.wait_report(account, name)[1]


def wait_messages(client: httpx.Client, path: str, count: int, **params: Any) -> list[dict[str, Any]]:
    """The history follows the log in the background: wait until it holds `count` messages."""
    deadline = time.monotonic() + 30
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        found = answer.json()["messages"]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(found)


def test_without_a_rest_key_every_route_is_401_with_a_basic_challenge(api: Api) -> None:
    sftp_key = api.key("acme", "sftp")
    for auth in (None, ("acme", "secret-pw"), (api.keys["acme"][0], "wrong"), sftp_key):
        answer = httpx.get(f"{api.base}/api/v1/files", auth=auth)
        assert answer.status_code == 401, (auth, answer.text)
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert answer.json()["error"]
    assert "sftp channel" in httpx.get(f"{api.base}/api/v1/files", auth=sftp_key).json()["error"]
    assert "not an account's password" in httpx.get(f"{api.base}/api/v1/files", auth=("acme", "secret-pw")).json()["error"]


def test_a_file_uploaded_over_sftp_with_its_report_original_and_messages(api: Api) -> None:
    report = sftp_upload(api.service, "acme", "statements.json", FILE)
    with api.client("acme") as client:
        files = client.get("/api/v1/files").json()["files"]
        mine = [f for f in files if f["name"] == "statements.json"]
        assert len(mine) == 1 and mine[0]["status"] == "processed" and mine[0]["messages_queued"] == 2
        file_id = mine[0]["file_id"]
        assert file_id == report["file_id"]
        detail = client.get(f"/api/v1/files/{file_id}").json()
        assert detail["report"] == report  # rebuilt from the events: the filed report, field for field
        original = client.get(f"/api/v1/files/{file_id}/original")
        assert original.status_code == 200 and json.loads(original.content) == FILE
        messages = wait_messages(client, f"/api/v1/files/{file_id}/messages", 2)
        assert [(m["index"], m["msisdn"], m["customer_id"]) for m in messages] == [
            (0, "27831234501", "C1"), (1, "27831234502", "C2"),
        ]
        assert messages[0]["text"] == "Hi Thandi, your statement is ready"
        by_number = wait_messages(client, "/api/v1/messages", 1, msisdn="083 123 4501")  # national form
        assert {m["file_id"] for m in by_number} == {file_id}
        by_customer = client.get("/api/v1/messages", params={"customerId": "C2"}).json()["messages"]
        assert [m["msisdn"] for m in by_customer] == ["27831234502"]


def test_pages_of_files_follow_the_cursor(api: Api) -> None:
    for number in range(3):
        sftp_upload(api.service, "acme", f"page-{number}.json", FILE)
    with api.client("acme") as client:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/files", params=params).json()
            seen += [f["file_id"] for f in page["files"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) >= 4
        assert client.get("/api/v1/files", params={"cursor": "garbage"}).status_code == 400
        assert client.get("/api/v1/files", params={"limit": 0}).status_code == 422


def test_opt_outs_added_over_rest_are_skipped_by_the_next_file(api: Api) -> None:
    with api.client("acme") as client:
        added = client.post("/api/v1/optouts", json={"msisdns": ["083 123 4502"]})
        assert added.status_code == 200 and added.json()["added"] == ["27831234502"]
        assert "27831234502" in client.get("/api/v1/optouts").json()["msisdns"]
        report = sftp_upload(api.service, "acme", "after-optout.json", FILE)
        assert report["optouts_skipped"] == 1 and report["messages_queued"] == 1
        removed = client.delete("/api/v1/optouts/0831234502")
        assert removed.status_code == 200 and removed.json()["removed"] == ["27831234502"]
        assert "27831234502" not in client.get("/api/v1/optouts").json()["msisdns"]
        assert client.post("/api/v1/optouts", json={"msisdns": ["nope"]}).status_code == 400


def test_an_upload_over_rest_gets_the_same_report_as_one_over_sftp(api: Api) -> None:
    body = json.dumps(FILE).encode()
    with api.client("rival") as client:
        answer = client.post("/api/v1/files", files={"file": ("via-rest.json", body, "application/json")})
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"account": "rival", "name": "via-rest.json", "folder": "Send_SMS", "status": "accepted"}
    folder, by_rest = api.service.wait_report("rival", "via-rest.json")
    by_sftp = sftp_upload(api.service, "rival", "via-sftp.json", FILE)
    assert folder == "Processed"
    varying = {"file", "file_id", "received_at", "completed_at"}
    assert {k: v for k, v in by_rest.items() if k not in varying} == {k: v for k, v in by_sftp.items() if k not in varying}
    with api.client("rival") as client:
        refused = client.post("/api/v1/files", files={"file": ("notes.exe", b"{}", "application/octet-stream")})
        assert refused.status_code == 400 and refused.json()["error"]
        sneaky = client.post("/api/v1/files", files={"file": ("../acme/Send_SMS/x.json", body, "application/json")})
        assert sneaky.status_code == 400
    assert not (api.service.folder("acme", "Send_SMS") / "x.json").exists()


def test_every_route_as_another_account_or_a_sub_account_is_404(api: Api) -> None:
    report = sftp_upload(api.service, "acme", "private.json", FILE)
    file_id = report["file_id"]
    routes = [
        ("GET", f"/api/v1/files/{file_id}", {}),
        ("GET", f"/api/v1/files/{file_id}/original", {}),
        ("GET", f"/api/v1/files/{file_id}/messages", {}),
        ("GET", "/api/v1/files", {"account": "acme"}),
        ("GET", "/api/v1/messages", {"account": "acme"}),
        ("GET", "/api/v1/account", {"account": "acme"}),
        ("GET", "/api/v1/credits", {"account": "acme"}),
        ("GET", "/api/v1/optouts", {"account": "acme"}),
        ("POST", "/api/v1/optouts", {"account": "acme"}),
        ("DELETE", "/api/v1/optouts/0831234599", {"account": "acme"}),
    ]
    for who in ("rival", "acme-sub"):
        with api.client(who) as client:
            for method, path, params in routes:
                body = {"msisdns": ["0831234599"]} if method == "POST" else None
                answer = client.request(method, path, params=params, json=body)
                assert answer.status_code == 404, (who, method, path, answer.text)
                assert answer.json()["error"]
    with api.client("acme") as parent:
        assert parent.get("/api/v1/account", params={"account": "acme-sub"}).json()["username"] == "acme-sub"
        assert parent.get("/api/v1/files", params={"account": "acme-sub"}).status_code == 200
        assert parent.get("/api/v1/files", params={"account": "rival"}).status_code == 404
        assert parent.get("/api/v1/files/not-a-uuid").status_code == 404
    with api.client("acme") as client:
        assert "acme-sub" not in str(client.get("/api/v1/optouts").json())


def test_a_revoked_key_stops_working(api: Api) -> None:
    key_id, secret = api.key("rival")
    with httpx.Client(base_url=api.base, auth=(key_id, secret), timeout=30) as client:
        assert client.get("/api/v1/credits").json() == {"account": "rival", "credits": client.get("/api/v1/credits").json()["credits"]}
        revoked = api.service.cli("apikey", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 15  # AUTH_TTL: a checked key is trusted for 5 s
        while client.get("/api/v1/credits").status_code == 200:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.5)
        answer = client.get("/api/v1/credits")
        assert answer.status_code == 401 and "revoked" in answer.json()["error"]


def test_the_openapi_document_lists_the_api_and_not_the_gateway_endpoints(api: Api) -> None:
    document = httpx.get(f"{api.base}/openapi.json").json()
    paths = set(document["paths"])
    assert {"/api/v1/files", "/api/v1/files/{file_id}", "/api/v1/messages", "/api/v1/optouts"} <= paths
    assert not any(p.startswith("/gateways") or p == "/health" for p in paths)
    assert "HTTPBasic" in document["components"]["securitySchemes"]
    assert httpx.get(f"{api.base}/health").json() == {"status": "ok"}
    missing = httpx.get(f"{api.base}/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]


def test_no_data_path_is_reachable_outside_the_account(api: Api, tmp_path: Path) -> None:
    with api.client("acme") as client:
        for path in ("/api/v1/files/..%2F..%2Frival", "/api/v1/files/%2e%2e/original", "/api/v1/optouts/..%2F..%2Fx"):
            answer = client.get(path)
            assert answer.status_code in (400, 404, 405), (path, answer.status_code)
