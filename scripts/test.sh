#!/usr/bin/env bash
# make test: every test. Unit tests (ctest), then the kernel and two-host
# tests (pytest, as root). Exits non-zero if anything failed.
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
export HOOKER_BUILD=$(realpath "$BUILD")
rc=0
ctest --test-dir "$BUILD" --output-on-failure || rc=1
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests bench/test_bench_cli.py || rc=1
exit $rc
