#!/usr/bin/env bash
# A local cluster of N rpi-agents on 127.0.2.x (loopback only, no mDNS,
# static join), for trying the agent without Pis or Docker. Ctrl-C makes every
# agent leave gracefully.
set -euo pipefail
n=${N:-3}
cd "$(dirname "$0")/.."
bin=bin/rpi-agent
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }
state=build/local-cluster
rm -rf "$state"; mkdir -p "$state"

pids=()
stop() {
	trap - INT TERM EXIT
	echo; echo "stopping ${#pids[@]} agents (graceful leave)..."
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$n"); do
	ip=127.0.2.$i
	join=()
	[ "$i" -gt 1 ] && join=(--join 127.0.2.1:7946)
	"$bin" --name "pi-$i" --bind "$ip:7946" --http "$ip:8080" --no-mdns --profile local \
		--data-dir "$state/pi-$i" --config /dev/null "${join[@]}" >"$state/pi-$i.log" 2>&1 &
	pids+=($!)
done

# Wait until the first agent sees everyone alive.
for _ in $(seq 1 100); do
	alive=$(curl -fsS http://127.0.2.1:8080/nodes/alive 2>/dev/null | grep -o '127\.0\.2\.[0-9]*:7946' | wc -l || true)
	[ "$alive" = "$n" ] && break
	sleep 0.1
done
"$bin" members --agent http://127.0.2.1:8080 || true
echo
echo "status pages:"
for i in $(seq 1 "$n"); do echo "  http://127.0.2.$i:8080/"; done
echo "logs in $state/; RPI_AGENT=http://127.0.2.1:8080 for the workstation tools. Ctrl-C to stop."
wait
