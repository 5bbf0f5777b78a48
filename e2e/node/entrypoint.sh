#!/bin/sh
# rpi-node-entrypoint: process 1 of a virtual Raspberry Pi container.
#
# Containers have no systemd, so this does what the units do on a real card:
# the first-boot identity step, sshd, then the agent. SIGTERM and SIGINT are
# forwarded to the agent so it leaves the cluster gracefully; the container
# exits with the agent's status when the agent ends. Arguments are passed to
# the agent after its config file.
#
# mDNS is not pinned to eth0: after `docker network disconnect`/`connect` the
# interface comes back as eth1, and a pinned agent would wait for eth0 for
# ever. Every interface of a node is on the cluster's private network, so the
# agent's default (all up multicast interfaces) keeps mDNS on it.
set -u

log() { echo "rpi-node-entrypoint: $*" >&2; }

# A real boot starts with an empty /run (tmpfs); a container's /run comes
# from the image or the previous run. Stale pid files would make daemons look
# alive when they are not.
find /run -maxdepth 2 -name '*.pid' -type f -delete 2>/dev/null

if [ -x /usr/local/sbin/rpi-firstboot ]; then
	/usr/local/sbin/rpi-firstboot || { log "first-boot step failed"; exit 1; }
fi

mkdir -p /run/sshd
if [ -x /usr/sbin/sshd ]; then
	/usr/sbin/sshd -E /var/log/sshd.log || log "sshd did not start"
fi

agent=/usr/local/bin/rpi-agent
if [ -x "$agent" ]; then
	# As under systemd (User=rpi-agent, StateDirectory=rpi-agent): the agent
	# runs unprivileged and owns its data directory, a volume that may be
	# fresh or carried over from an earlier container.
	if id rpi-agent >/dev/null 2>&1; then
		mkdir -p /var/lib/rpi-agent
		chown rpi-agent:rpi-agent /var/lib/rpi-agent
		chmod 0750 /var/lib/rpi-agent
		setpriv --reuid=rpi-agent --regid=rpi-agent --init-groups \
			"$agent" --config /etc/rpi-cluster/agent.yaml "$@" &
	else
		"$agent" --config /etc/rpi-cluster/agent.yaml "$@" &
	fi
else
	# A bare image (no customisation) keeps running for harness tests.
	log "no agent at $agent; idling"
	sleep 2147483647 &
fi
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

# wait returns early (status > 128) when a trapped signal arrives; keep
# waiting until the child has really gone and report its status.
while :; do
	wait "$pid"
	status=$?
	kill -0 "$pid" 2>/dev/null || break
done
log "agent exited with status $status"
exit "$status"
