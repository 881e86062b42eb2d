// Package unixsock finds the process behind a unix socket, so that a
// daemon is stopped by the PID the kernel vouches for, never by a name
// that other processes on the machine may share.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Owner returns the process that listens on the unix socket at path (from
// the credentials the kernel keeps for it), or 0 when none does.
func Owner(path string) (int, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("who serves on %s: %w", path, credErr)
	}
	return int(cred.Pid), nil
}
