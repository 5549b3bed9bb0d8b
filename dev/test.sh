#!/bin/sh
# Runs every check and test: formatting, clippy, shellcheck, unit tests and the
# end-to-end tests in network namespaces (root). Installs missing packages first.
# With TAPTUN_E2E=require (the default here) a missing prerequisite fails the run
# instead of skipping, and the end-to-end tests that ran are counted.
set -eu
cd "$(dirname "$0")/.."
sh dev/deps.sh
export TAPTUN_E2E="${TAPTUN_E2E:-require}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ran_dir=$work/ran
export TAPTUN_E2E_RAN="$ran_dir"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
shellcheck -S warning scripts/*.sh dev/*.sh
cargo test --all-targets

# The same code built for aarch64 (where the HMAC lanes fall back to the
# sha2 crate) passes clippy and its pure tests under qemu. The end-to-end
# tests stay native: qemu-user does not emulate TAP and namespace setup.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo clippy --target aarch64-unknown-linux-gnu --all-targets -- -D warnings
cargo test --target aarch64-unknown-linux-gnu --lib --test pair --test vectors --test aead_vectors

# Guard against a suite that passes because nothing ran: every e2e test
# function (named e2e_*) must have left its marker, a file named after the
# function (require_e2e! in tests/common/mod.rs writes it). Names, not
# counts: a missing marker and an unexpected one must not cancel out.
cargo test --all-targets -- --list 2>/dev/null | sed -n 's/^\(e2e_.*\): test$/\1/p' | sort >"$work/all.txt"
uniq -d "$work/all.txt" >"$work/twice.txt"
sort -u "$work/all.txt" >"$work/listed.txt"
find "$ran_dir" -type f -printf '%f\n' 2>/dev/null | sort -u >"$work/ran.txt"
comm -23 "$work/listed.txt" "$work/ran.txt" >"$work/missing.txt"
comm -13 "$work/listed.txt" "$work/ran.txt" >"$work/unlisted.txt"
echo "end-to-end tests: $(wc -l <"$work/ran.txt") ran of $(wc -l <"$work/listed.txt") listed"
if [ "$TAPTUN_E2E" = require ]; then
    fail=0
    if [ ! -s "$work/listed.txt" ]; then
        echo "FAIL: no end-to-end test listed" >&2
        fail=1
    fi
    if [ -s "$work/twice.txt" ]; then
        echo "FAIL: end-to-end test names used twice (one marker for both):" >&2
        cat "$work/twice.txt" >&2
        fail=1
    fi
    if [ -s "$work/missing.txt" ]; then
        echo "FAIL: listed, but no marker (did not run, or skipped):" >&2
        cat "$work/missing.txt" >&2
        fail=1
    fi
    if [ -s "$work/unlisted.txt" ]; then
        echo "FAIL: a marker from a test not listed as e2e_* (not in this count):" >&2
        cat "$work/unlisted.txt" >&2
        fail=1
    fi
    [ "$fail" -eq 0 ] || exit 1
fi
