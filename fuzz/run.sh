#!/usr/bin/env bash
# A short, coverage-guided fuzzing run of lab-core's parsers, on the stable toolchain.
#
#   fuzz/run.sh [SECONDS]        (default 30)
#
# cargo-fuzz (`cargo +nightly fuzz run parse`) is the usual front end; it needs nightly for its
# sanitizers. The coverage instrumentation itself uses stable `-C` flags, so this script gets a
# coverage-guided run without nightly. The corpus starts from the protocol's examples in seeds/ and
# grows in corpus/ (not committed). A crash leaves its input in artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# With an explicit --target, RUSTFLAGS reach only the fuzzed code, not build scripts (as cargo-fuzz does).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --quiet --target "$host" --target-dir target/instrumented
mkdir -p corpus artifacts
"./target/instrumented/$host/release/parse" -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix=artifacts/ corpus seeds 2>&1 | grep -E 'INFO: seed corpus|DONE|ERROR|panicked|Done' || true
# libFuzzer exits non-zero on a crash; `set -o pipefail` would have stopped us, so check artifacts too.
if compgen -G "artifacts/crash-*" >/dev/null; then
  echo "fuzz: crash inputs in fuzz/artifacts/" >&2
  exit 1
fi
