#!/usr/bin/env bash
# Runs the side-by-side benchmarks quoted in docs/benchmarks.md and prints
# their raw output, then draws it as SVG charts in docs/charts (progress on
# stderr). Usage: bash docs/bench.sh [count] > docs/bench-raw.txt
# CHARTS=0 skips the charts. The head-of-line CDFs (root, netns) are made
# apart, see docs/benchmarks-hol.md.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-3}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
run() { go test -run '^$' -count "$count" -benchtime "${BT:-1s}" "$@" 2>&1 | grep -E '^(Benchmark|goos|goarch|cpu|pkg)' | tee -a "$raw"; }
# Carrier over each stack against raw TLS (issue: foundation).
run -bench 'BenchmarkCarrierBulk64KiB|BenchmarkRawTLSBulk64KiB|BenchmarkCarrierSmallMessages' ./carrier
# Time to first message per stack and for the race.
BT=200x run -bench 'BenchmarkTimeToFirstMessage' ./carrier
# FSP against quic-go and TLS over TCP (issue: FSP).
run -bench 'BenchmarkBulk|BenchmarkHandshakeFirstMessage|BenchmarkRoundTrip' ./psi/fsp
BT=1x run -bench 'BenchmarkIdleConnMemory|BenchmarkBurstMemory' ./psi/fsp
BT=200x run -bench 'BenchmarkHandshakeAlloc' -benchmem ./psi/fsp
# One and four bulk flows to one listener against quic-go and TLS over TCP,
# with CPU per message, the one-core seal rate, and FSP with jumbo datagrams (issue 15).
BT=2s run -bench 'BenchmarkOneFlow|BenchmarkFourFlows' ./psi/fsp
# One listener (a child process at GOMAXPROCS 1 and 2), 1,000 and 5,000 clients (issue 15).
BT=1x run -bench 'BenchmarkServerScale' ./psi/fsp
# The TCP stack's transient against raw TLS.
run -bench 'BenchmarkTransient64KiB|BenchmarkRawTLS64KiB' ./psi/tcp
# Charts of the tables in docs/benchmarks.md.
if [ "${CHARTS:-1}" != 0 ]; then
	go run ./internal/benchchart -out docs/charts -as RawTLSBulk64KiB=CarrierBulk64KiB/raw-tls \
		-as Transient64KiB=TCPTransient64KiB/psi-tcp -as RawTLS64KiB=TCPTransient64KiB/raw-tls "$raw" >&2
fi
# Namespace benchmarks (root, ip, nft, tc; they skip otherwise), issue 15:
# head-of-line at 2% loss on veth and over 20 ms, and fairness and goodput under loss on
# a 100 Mbit/s, 20 ms bottleneck. Printed only, not charted here.
# A skipped benchmark prints no line: say why here.
if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null || ! command -v ip >/dev/null; then
	echo "bench.sh: namespace benchmarks need root, ip and nft (apt-get install nftables): they will print nothing" >&2
fi
ns() { go test -run '^$' -count "$count" "$@" 2>&1 | grep -E '^(Benchmark|goos|goarch|cpu|pkg)'; }
ns -bench 'BenchmarkHeadOfLine$' -benchtime 2000x ./carrier
# The same over a 20 ms round trip; request/response takes about 50 s a stack.
ns -bench 'BenchmarkHeadOfLineRTT' -benchtime 2000x ./carrier
ns -bench 'BenchmarkFairness|BenchmarkGoodputLoss' -benchtime 1x ./psi/fsp
# Per-acknowledgement cost of a session's shared congestion state with 1
# and 1,000 clones (issue 15; no sockets). Printed only.
ns -bench 'BenchmarkCCOnAck' -benchtime 20000x ./psi/fsp
