#!/bin/sh
# Runs every check and test: formatting, clippy, shellcheck, unit tests and the
# end-to-end tests in network namespaces (root). Installs missing packages first.
# With TAPTUN_E2E=require (the default here) a missing prerequisite fails the run
# instead of skipping, and the end-to-end tests that ran are counted.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
export TAPTUN_E2E="${TAPTUN_E2E:-require}"
ran_dir=$(mktemp -d)
trap 'rm -rf "$ran_dir"' EXIT
export TAPTUN_E2E_RAN="$ran_dir"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
shellcheck -S warning scripts/*.sh
cargo test --all-targets

# Guard against a suite that passes because nothing ran: every e2e test
# function (named e2e_*) must have left its marker.
listed=$(cargo test --all-targets -- --list 2>/dev/null | grep -c '^e2e_.*: test$' || true)
ran=$(find "$ran_dir" -type f | wc -l)
echo "end-to-end tests: $ran ran of $listed listed"
if [ "$TAPTUN_E2E" = require ] && { [ "$listed" -eq 0 ] || [ "$ran" -ne "$listed" ]; }; then
    echo "FAIL: $ran of $listed end-to-end tests ran" >&2
    exit 1
fi
