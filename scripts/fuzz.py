"""The fuzzer behind scripts/fuzz (see there)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sftpsms.limits import Limits  # noqa: E402
from tests.test_fuzz_format import (  # noqa: E402
    HOSTILE_PIECES,
    SEED_FILES,
    SMALL,
    check_file,
    check_zip,
    generated,
    generated_zips,
    mutated,
    mutated_zips,
)

TARGETS: dict[str, tuple[st.SearchStrategy[bytes], Callable[[bytes, Path, Limits], str]]] = {
    "files": (mutated(SEED_FILES, HOSTILE_PIECES), check_file),
    "generated": (generated(), check_file),
    "zips": (mutated_zips(), check_zip),
    "generated-zips": (generated_zips(), check_zip),
}
ROUND_EXAMPLES = 100  # per target and round; rounds go on until the time is up


def fuzz(name: str, strategy: st.SearchStrategy[bytes], check: Callable[[bytes, Path, Limits], str],
         folder: Path, outcomes: Counter[str], run_seed: int) -> None:
    """One round of `check` over ROUND_EXAMPLES inputs, with the small limits and the defaults."""

    @seed(run_seed)
    @settings(
        max_examples=ROUND_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(data=strategy)
    def round_of(data: bytes) -> None:
        outcomes[f"{name} small-limits {check(data, folder, SMALL)}"] += 1
        outcomes[f"{name} default-limits {check(data, folder, Limits())}"] += 1

    round_of()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--only", choices=sorted(TARGETS), action="append")
    args = parser.parse_args()
    targets = args.only or list(TARGETS)
    deadline = time.monotonic() + args.minutes * 60
    outcomes: Counter[str] = Counter()
    print(f"fuzzing {', '.join(targets)} for {args.minutes:g} min, seed {args.seed}; "
          f"{len(SEED_FILES)} upstream seed files, {len(HOSTILE_PIECES)} hostile pieces")
    started = time.monotonic()
    rounds = 0
    with tempfile.TemporaryDirectory(prefix="sftpsms-fuzz-") as scratch:
        folder = Path(scratch)
        try:
            while time.monotonic() < deadline:
                for name in targets:
                    strategy, check = TARGETS[name]
                    fuzz(name, strategy, check, folder, outcomes, args.seed + rounds)
                    if time.monotonic() >= deadline:
                        break
                rounds += 1
                tried = sum(outcomes.values())
                print(f"  round {rounds}: {tried} checks in {time.monotonic() - started:.0f} s", flush=True)
        except Exception as error:  # a property failed: hypothesis attaches the shrunk input as notes
            print(f"FOUND after {sum(outcomes.values())} checks: {type(error).__name__}: {error}")
            for note in getattr(error, "__notes__", []):
                print(f"  {note}")
            return 1
    print(f"tried {sum(outcomes.values())} checks in {time.monotonic() - started:.0f} s; nothing found. Outcomes:")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:8d}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
