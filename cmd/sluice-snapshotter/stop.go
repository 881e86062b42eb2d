package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/unixsock"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/fusemanager"
	"github.com/sluicehq/sluice/internal/snapshotter"
)

// stopWait bounds the wait for the snapshotter and the FUSE manager to
// exit once asked.
const stopWait = 30 * time.Second

func newStopCommand() *cobra.Command {
	var f flags
	var force bool
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the snapshotter and its FUSE manager, unmounting every streamed layer",
		Long: `Stop stops the sluice-snapshotter serving on --address (SIGTERM, then waits
for it to exit), then asks its FUSE manager to unmount every streamed layer
and exit. The FUSE manager outlives the snapshotter by design, so that a
restart never disturbs running containers; stop is how to end both.

While a container uses a streamed layer (an overlay has it as a lower
directory, or it is bind-mounted or has files open), stop changes nothing,
names the layers and what uses them, and exits 1: stop those containers
first. --force detaches such layers lazily instead; the containers reading
them then get I/O errors.

A snapshotter run by systemd is restarted by it: stop the unit first
(systemctl stop sluice-snapshotter), then run stop for the FUSE manager. The
chunk cache and the layers' TOCs stay on disk; the next start of the
snapshotter mounts its layers again.`,
		Example: `  sluice-snapshotter stop
  sluice-snapshotter stop --root /tmp/node/root --address /tmp/node/sluice.sock
  systemctl stop sluice-snapshotter && sluice-snapshotter stop --config /etc/sluice/snapshotter.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			return stop(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg, force)
		},
	}
	addFlags(cmd, &f)
	cmd.Flags().BoolVar(&force, "force", false, "detach layers in use too: containers reading them get I/O errors")
	return cmd
}

// stop stops the snapshotter on cfg.Address, then its FUSE manager, unless
// (without force) a streamed layer is in use.
func stop(ctx context.Context, out, errOut io.Writer, cfg snapshotter.Config, force bool) error {
	if os.Geteuid() != 0 {
		return errors.New("stop needs root: the FUSE manager's socket and its mounts are root's")
	}
	socket := managerSocket(cfg)
	manager := fusemanager.NewClient(socket)
	managerUp := manager.Alive(ctx)
	snPID, err := unixsock.Owner(cfg.Address)
	if err != nil {
		return err
	}
	if !managerUp && snPID == 0 {
		fmt.Fprintf(out, "nothing to stop: no snapshotter answers on %s and no FUSE manager on %s\n", cfg.Address, socket)
		return nil
	}
	// Refuse before stopping anything.
	if managerUp && !force {
		busy, err := manager.InUse(ctx)
		if err != nil {
			return err
		}
		if len(busy) > 0 {
			return inUseError(busy, "")
		}
	}
	if snPID != 0 {
		if err := stopSnapshotter(snPID, cfg.Address); err != nil {
			return err
		}
		fmt.Fprintf(out, "stopped sluice-snapshotter (pid %d) on %s\n", snPID, cfg.Address)
	}
	if !managerUp {
		fmt.Fprintf(out, "no FUSE manager answers on %s\n", socket)
		return nil
	}
	managerPID, err := unixsock.Owner(socket)
	if err != nil {
		return err
	}
	res, err := manager.Stop(ctx, force)
	if errors.Is(err, fusemanager.ErrInUse) {
		return inUseError(res.InUse, "the snapshotter was stopped; start it again, or stop those containers and run stop again")
	}
	if err != nil {
		return err
	}
	if len(res.InUse) > 0 {
		fmt.Fprintln(errOut, inUseText(res.InUse, "--force: detached layers in use; the containers reading them get I/O errors from now on:"))
	}
	if managerPID != 0 && !waitGone(managerPID, stopWait) {
		return fmt.Errorf("the FUSE manager (pid %d) unmounted %d layers but has not exited %s later; see %s",
			managerPID, res.Unmounted, stopWait, filepath.Join(cfg.Root, "fuse-manager.log"))
	}
	fmt.Fprintf(out, "unmounted %d streamed layers; stopped the FUSE manager (pid %d) on %s\n", res.Unmounted, managerPID, socket)
	return nil
}

// inUseError says which layers are in use and what to do.
func inUseError(busy []fusemanager.InUse, then string) error {
	head := fmt.Sprintf("%d streamed layers are in use; stop the containers using them, or run stop --force "+
		"(the containers reading them then get I/O errors):", len(busy))
	text := inUseText(busy, head)
	if then != "" {
		text += "\n" + then
	}
	return errors.New(text)
}

func inUseText(busy []fusemanager.InUse, head string) string {
	var b strings.Builder
	b.WriteString(head)
	for _, u := range busy {
		fmt.Fprintf(&b, "\n  %s (image %s, layer %s), used by %s", u.Mountpoint, u.Image, u.Layer, strings.Join(u.By, ", "))
	}
	return b.String()
}

// stopSnapshotter sends SIGTERM to the snapshotter and waits until it has
// exited. It refuses a process that is not a sluice-snapshotter, and one
// that systemd would start again.
func stopSnapshotter(pid int, address string) error {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !strings.HasPrefix(filepath.Base(exe), "sluice-snapshotter") {
		return fmt.Errorf("process %d (%s) serves on %s and is not a sluice-snapshotter: not stopping it", pid, exe, address)
	}
	if unit := systemdService(pid); unit != "" {
		return fmt.Errorf("sluice-snapshotter (pid %d) runs as the systemd unit %s, which would start it again: "+
			"run systemctl stop %s first, then this again", pid, unit, unit)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop sluice-snapshotter (pid %d): %w", pid, err)
	}
	if !waitGone(pid, stopWait) {
		return fmt.Errorf("sluice-snapshotter (pid %d) has not exited %s after SIGTERM", pid, stopWait)
	}
	return nil
}

// systemdService is the systemd service whose control group holds pid, or
// "" when none does.
func systemdService(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	return cgroupService(string(b))
}

// cgroupService reads the systemd service out of /proc/PID/cgroup.
func cgroupService(cgroups string) string {
	for _, line := range strings.Split(cgroups, "\n") {
		// hierarchy-ID:controllers:path; the unified hierarchy (0::) or
		// systemd's own (name=systemd) names the unit.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[0] == "0" || parts[1] == "name=systemd") {
			if unit := filepath.Base(parts[2]); strings.HasSuffix(unit, ".service") {
				return unit
			}
		}
	}
	return ""
}

// waitGone waits until pid has exited (a zombie counts: its parent may
// not be ours to reap it).
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// The state follows the command name, in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
