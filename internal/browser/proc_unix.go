//go:build unix

package browser

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the browser in its own process group, so that
// killProcessGroup also reaches the renderer and utility processes it forks.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills the browser and every process it started.
func killProcessGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
