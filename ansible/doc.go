// Package ansible holds the project's Ansible collection, rpi_cluster.pi,
// under collections/ansible_collections/rpi_cluster/pi: an inventory plugin
// that reads an agent's GET /v1/nodes, a module that records or removes a
// service on a node, and a role that installs rpi-agent on a running
// Raspberry Pi OS. Point Ansible at it with
// ANSIBLE_COLLECTIONS_PATH=ansible/collections, or build it with
// ansible-galaxy collection build.
//
// The package has no Go code of its own: its tests drive the real Ansible
// tools (ansible-galaxy, ansible-doc, ansible-inventory, ansible-playbook,
// ansible-lint) against real agent processes on loopback, and skip, saying
// so, where ansible-core is not installed. The role's test needs SSH-able
// machines without an agent and lives in the e2e suite (e2e/role_e2e_test.go).
package ansible
