//go:build !linux

package e2e

import "syscall"

// dieWithTest is a no-op where the kernel cannot tie a child's life to its
// parent's.
func dieWithTest() *syscall.SysProcAttr { return nil }
