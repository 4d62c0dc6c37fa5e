#!/usr/bin/env bash
# Every check CI runs, on a fresh Debian 12 machine: set-up, formatting, lints, unit and end-to-end tests
# (the end-to-end tests start the RTSP test camera and Azurite themselves, on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# Two at a time: each end-to-end test runs a camera, Azurite and the service on a 2-core machine.
# --show-output prints the fault suite's FIGURE lines (docs/RELIABILITY.md).
results=$(mktemp)
cargo test --locked --lib --bins --tests -- --test-threads 2 --show-output 2>&1 | tee "$results"
echo "== container image and compose (scripts/container-test.sh)"
bash scripts/container-test.sh
echo "== benchmark smoke run (figures only, no thresholds)"
BENCH_SMOKE=1 bash scripts/bench.sh
# One closing line with the totals of every test binary above.
grep -E '^test result:' "$results" | awk '{p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}'
