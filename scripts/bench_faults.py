"""The fault benchmark behind scripts/bench_faults (see there)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.store import open_store  # noqa: E402
from tests.service import READY, Service, running_service  # noqa: E402


def generate(path: Path, contacts: int) -> None:
    with path.open("w") as out:
        out.write('{"Version": 7, "Message_Template": "Hello", "Contacts": [\n')
        out.write(",\n".join(json.dumps({"msisdn": f"2783{i % 10_000_000:07d}"}) for i in range(contacts)))
        out.write("\n]}\n")


def status(data: Path) -> str:
    store = open_store(data)
    try:
        return store.file_by_name("acme", "big.json").status
    except Exception:
        return "none"
    finally:
        store.close()


def doors_after_start(data: Path) -> float:
    """Seconds from spawning `sftpsms serve` to its doors listening; the process is stopped after."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "sftpsms.cli", "serve", "--data-dir", str(data), "--sftp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=(data / "server.log").open("a"),
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if READY.search(line):
            break
    took = time.monotonic() - started
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return took


def stop(service: Service, sig: int) -> float:
    process = service.process
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=120)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        upload = Path(scratch) / "big.json"
        generate(upload, args.contacts)
        with running_service(data) as service:
            service.add_account("acme", credits=args.contacts)
            with service.paramiko("acme") as sftp:
                sftp.put(str(upload), "Send_SMS/big.json")
            while not list((data / "spool").glob("*.jsonl")):
                time.sleep(0.01)
            time.sleep(0.5)
            print(f"SIGTERM in pass 1 of {args.contacts} contacts: stopped in {stop(service, signal.SIGTERM):.2f} s")
        print(f"doors listening with it left in work/: {doors_after_start(data):.2f} s after start")
        with running_service(data) as service:
            while status(data) != "accepted":
                time.sleep(0.05)
            time.sleep(1.0)
            print(f"SIGTERM in pass 2: stopped in {stop(service, signal.SIGTERM):.2f} s")
        with running_service(data) as service:
            time.sleep(1.0)
            stop(service, signal.SIGKILL)
        print(f"doors listening after a SIGKILL in pass 2: {doors_after_start(data):.2f} s after start")
        with running_service(data) as service:
            folder, report = service.wait_report("acme", "big.json", timeout=600)
            print(f"finished: {folder} messages_queued={report['messages_queued']}")


if __name__ == "__main__":
    main()
