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

# The live-systemd test's container root (tests/systemd_e2e.rs): on a new
# machine a debootstrap of about a minute, mostly download and unpacking,
# made now in the background while clippy and the builds take the CPUs.
# Its test build is one the tests below need anyway. It runs to its end
# even if this script stops first (a debootstrap killed midway would
# leave its mounts behind); waited for before the end-to-end tests.
sysd=$(cargo test --test systemd_e2e --no-run --message-format=json 2>"$work/root-build" |
    sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p')
[ -n "$sysd" ] || { cat "$work/root-build" >&2; echo "FAIL: no systemd_e2e test binary" >&2; exit 1; }
"$sysd" --ignored --exact prepare_container_root >"$work/root.log" 2>&1 &
root_pid=$!

cargo clippy --all-targets -- -D warnings
shellcheck -S warning scripts/*.sh dev/*.sh dist/taptun.up.example

# The HMAC lanes' SHA-NI code runs only on a CPU with SHA-NI; elsewhere its
# unit tests can only say that they skipped it. Where /proc/cpuinfo shows
# sha_ni they must exercise it (TAPTUN_REQUIRE_SHANI=1): a detection bug
# would otherwise test the portable code against itself and pass.
if grep -qw sha_ni /proc/cpuinfo; then shani=1; else shani=0; fi

# Everything but the end-to-end tests, in parallel.
TAPTUN_REQUIRE_SHANI=$shani cargo test --all-targets -- --skip e2e_
# Which lane code those tests exercised, in their own words.
TAPTUN_REQUIRE_SHANI=$shani cargo test --lib lanes::tests::paths_exercised -- --exact --nocapture \
    >"$work/lanes" 2>&1 || { cat "$work/lanes"; exit 1; }
grep '^lanes:' "$work/lanes"
# The end-to-end tests (e2e_*) one at a time: several hold only while the
# test has the CPUs to itself (a paced flood counted exactly, bursts
# delivered, replay ages clear of the window, timed exits), and libtest
# would pair them, two at once on two vCPUs, with a flood or a 20 MB
# transfer. On 2 vCPUs this costs about 85 s: some 195 s instead of 110.
wait "$root_pid" || {
    echo "container root: not prepared ahead (e2e_systemd_unit_in_container tries again and says why):"
    tail -5 "$work/root.log"
}
e2e_start=$(date +%s)
cargo test --tests -- --test-threads=1 e2e_
echo "end-to-end tests, one at a time: $(($(date +%s) - e2e_start)) s"

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
TAPTUN_REQUIRE_SHANI=0 cargo test --target aarch64-unknown-linux-gnu --lib --test pair --test vectors

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
    # Says $2 and lists file $1 when it is not empty.
    flag() {
        [ -s "$1" ] || return 0
        echo "FAIL: $2" >&2
        cat "$1" >&2
        fail=1
    }
    if [ ! -s "$work/listed.txt" ]; then
        echo "FAIL: no end-to-end test listed" >&2
        fail=1
    fi
    flag "$work/twice.txt" "end-to-end test names used twice (one marker for both):"
    flag "$work/missing.txt" "listed, but no marker (did not run, or skipped):"
    flag "$work/unlisted.txt" "a marker from a test not listed as e2e_* (not in this count):"
    [ "$fail" -eq 0 ] || exit 1
fi
