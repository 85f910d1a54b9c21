#!/usr/bin/env bash
# Runs the side-by-side benchmarks quoted in docs/benchmarks.md and prints
# their raw output. Usage: bash docs/bench.sh [count] > docs/bench-raw.txt
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-3}
run() { go test -run '^$' -count "$count" -benchtime "${BT:-1s}" "$@" 2>&1 | grep -E '^(Benchmark|goos|goarch|cpu|pkg)'; }
# Carrier over each stack against raw TLS (issue: foundation).
run -bench 'BenchmarkCarrierBulk64KiB|BenchmarkRawTLSBulk64KiB|BenchmarkCarrierSmallMessages' ./carrier
# Time to first message per stack and for the race.
BT=200x run -bench 'BenchmarkTimeToFirstMessage' ./carrier
# FSP against quic-go and TLS over TCP (issue: FSP).
run -bench 'BenchmarkBulk|BenchmarkHandshakeFirstMessage|BenchmarkRoundTrip' ./psi/fsp
BT=1x run -bench 'BenchmarkIdleConnMemory' ./psi/fsp
# The TCP stack's transient against raw TLS.
run -bench 'BenchmarkTransient64KiB|BenchmarkRawTLS64KiB' ./psi/tcp
