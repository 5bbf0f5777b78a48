#!/usr/bin/env bash
# The main job: start the virtual Pi cluster on Docker (N nodes, default 4)
# and deploy on it the way a user would with real Pis — two nginx web
# servers on the least busy nodes and a load balancer in front of them whose
# upstream is rendered from the web servers' live IPs — then show the load
# balancer answering from both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-4}

./scripts/deps.sh debootstrap ansible-core curl python3
go run ./e2e/cmd/rpi-vcluster up -n "$n"

# The workstation settings rpi-vcluster wrote: agents, token, SSH key and the
# known_hosts built from the nodes' gossiped host keys.
export RPI_WORKSTATION_CONFIG=$PWD/.cache/vcluster/config.yaml

echo
echo "== rpi-launch 2 nginx_webserver"
bin/rpi-launch 2 nginx_webserver
echo
echo "== rpi-launch 1 nginx_load_balancer"
bin/rpi-launch 1 nginx_load_balancer
echo
bin/rpi-meta list
echo
echo "== ansible-inventory --graph"
ansible-inventory -i ./rpi-inventory --graph

lb=$(bin/rpi-inventory --list | python3 -c '
import json, sys
inv = json.load(sys.stdin)
hosts = inv.get("nginx_load_balancer", {}).get("hosts", [])
print(inv["_meta"]["hostvars"][hosts[0]]["ansible_host"] if hosts else "")')
if [ -z "$lb" ]; then
	echo "no load balancer in the inventory" >&2
	exit 1
fi
echo
echo "== four requests through the load balancer at http://$lb:8000/"
for _ in 1 2 3 4; do
	curl -fsS --max-time 5 "http://$lb:8000/" | grep -o 'served by [^<]*' || true
done
echo
echo "The cluster keeps running. Status pages: http://<node>:8080/ (listed above)."
echo "Workstation tools: export RPI_WORKSTATION_CONFIG=$RPI_WORKSTATION_CONFIG"
echo "Self-healing:      bin/rpi-launch reconcile --watch"
echo "Remove it all:     make cluster-down"
