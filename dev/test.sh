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

# The fuzz targets build on this stable toolchain too (as `cargo fuzz`
# compiles them, with --cfg fuzzing), so a change to a harness cannot
# leave them broken; running them needs cargo-fuzz (docs/security.md).
RUSTFLAGS='--cfg fuzzing' cargo check --quiet --manifest-path fuzz/Cargo.toml

# The pure tests, the two-peer rig and the engine's loops on in-memory I/O
# need no privilege: run them again as nobody, with every capability gone
# from the bounding set and no namespace of their own.
bins=$(cargo test --lib --test pair --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p')
[ -n "$bins" ] || { echo "FAIL: no test binaries to run unprivileged" >&2; exit 1; }
for bin in $bins; do
    (cd / && setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- "$bin" -q) ||
        { echo "FAIL: $bin as an unprivileged user" >&2; exit 1; }
done

# The same code built for aarch64 (where the HMAC lanes fall back to the
# sha2 crate) passes clippy and its pure tests under qemu. The end-to-end
# tests stay native: qemu-user does not emulate TAP and namespace setup.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo clippy --target aarch64-unknown-linux-gnu --all-targets -- -D warnings
cargo test --target aarch64-unknown-linux-gnu --lib --test pair --test vectors --test aead_vectors

# Guard against a suite that passes because nothing ran: every e2e test
# function (named e2e_*) must have left its marker, a file named after the
# function (require_e2e! in tests/common/mod.rs writes it).
cargo test --all-targets -- --list 2>/dev/null | sed -n 's/^\(e2e_.*\): test$/\1/p' | sort -u >"$work/listed"
listed=$(wc -l <"$work/listed")
ran=$(find "$ran_dir" -type f 2>/dev/null | wc -l)
echo "end-to-end tests: $ran ran of $listed listed"
if [ "$TAPTUN_E2E" = require ] && { [ "$listed" -eq 0 ] || [ "$ran" -ne "$listed" ]; }; then
    echo "FAIL: $ran of $listed end-to-end tests ran; no marker from:" >&2
    find "$ran_dir" -type f -printf '%f\n' 2>/dev/null | sort | comm -23 "$work/listed" - >&2
    exit 1
fi
