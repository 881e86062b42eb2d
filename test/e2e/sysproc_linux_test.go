package e2e

import "syscall"

// dieWithTest has a child process killed when the test binary dies, since a
// test timeout panics past every cleanup.
func dieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
