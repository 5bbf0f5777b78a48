// Package e2e holds the end-to-end suite that runs on the virtual Raspberry
// Pi cluster (package e2e/vcluster). The tests are behind the build tag e2e,
// so `go test ./...` stays quick:
//
//	go test -tags e2e ./e2e/ -v -timeout 40m
//
// They need root, Docker and debootstrap (the node image is built once and
// cached, the base outside the checkout), and ansible-core for the SSH test.
// Every node boots systemd as process 1 with the image's units. Figures (detection, pause and
// heal times) are logged and written to build/e2e-results.md.
package e2e
