package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cluster is deploy/local-cluster.sh's topology, started by its up and
// stopped by its down; what it changes in between (stopping replicas and
// workers) goes through the PIDs up recorded.
type cluster struct {
	dir       string
	port      int
	statsPort int
	env       []string
	password  string
	downOnce  sync.Once
}

func clusterUp(dir string, port int) (*cluster, error) {
	c := &cluster{
		dir:       dir,
		port:      port,
		statsPort: port + 1 + 7,
		env: append(os.Environ(),
			"SLUICE_CLUSTER_DIR="+dir,
			"SLUICE_CLUSTER_PORT="+strconv.Itoa(port),
			"SLUICE_CLUSTER_BASE_PORT="+strconv.Itoa(port+1)),
	}
	cmd := exec.Command("deploy/local-cluster.sh", "up")
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own process group: a ^C to the benchmark must not reach the
	// cluster's processes before down stops them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		return c, fmt.Errorf("deploy/local-cluster.sh up: %w", err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "admin-password"))
	if err != nil {
		return c, err
	}
	c.password = strings.TrimSpace(string(pw))
	return c, nil
}

// down stops everything up started and removes its state; it runs once,
// whether from the end of the run or from a signal.
func (c *cluster) down() {
	c.downOnce.Do(func() {
		cmd := exec.Command("deploy/local-cluster.sh", "down")
		cmd.Env = c.env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "deploy/local-cluster.sh down: %v\n", err)
		}
	})
}

func (c *cluster) base() string { return fmt.Sprintf("http://127.0.0.1:%d", c.port) }

// pid is the recorded PID of NAME (replica-1, worker-2, postgres, ...)
// while that process still runs, with the start time up recorded, or 0.
func (c *cluster) pid(name string) int {
	b, err := os.ReadFile(filepath.Join(c.dir, "pids", name))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	if st, ok := procStat(pid); !ok || strconv.FormatUint(st.start, 10) != f[1] {
		return 0
	}
	return pid
}

// signal sends sig to the recorded process NAME.
func (c *cluster) signal(name string, sig syscall.Signal) error {
	pid := c.pid(name)
	if pid == 0 {
		return fmt.Errorf("%s is not running", name)
	}
	return syscall.Kill(pid, sig)
}

// waitExit waits until the recorded process NAME has exited.
func (c *cluster) waitExit(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for c.pid(name) != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still runs after %s", name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// serverStatus is HAProxy's view of each replica ("UP", "DOWN", "UP 1/2",
// ...), from its statistics page as CSV.
func (c *cluster) serverStatus() (map[string]string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/;csv", c.statsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("HAProxy stats: %v", err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[strings.TrimPrefix(strings.TrimSpace(h), "# ")] = i
	}
	out := map[string]string{}
	for _, rec := range recs[1:] {
		if rec[col["pxname"]] == "sluiced" && strings.HasPrefix(rec[col["svname"]], "replica-") {
			out[rec[col["svname"]]] = rec[col["status"]]
		}
	}
	return out, nil
}

// waitOut polls HAProxy's statistics until it has taken NAME out of the
// rotation.
func (c *cluster) waitOut(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.serverStatus()
		if err == nil && strings.HasPrefix(st[name], "DOWN") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("HAProxy still has %s as %q after %s (%v)", name, st[name], timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stat is what a process has used of the CPU, in clock ticks, and when it
// started.
type stat struct {
	cpu   uint64 // utime + stime
	ppid  int
	start uint64
}

// procStat reads /proc/PID/stat: the fields after the command name, whose
// parentheses may hold anything.
func procStat(pid int) (stat, bool) {
	if pid <= 0 {
		return stat{}, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
	// starttime 22.
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return stat{cpu: ut + st, ppid: ppid, start: start}, true
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// cpuSample is the CPU used so far by each group of processes: PostgreSQL
// counts its server and every backend (its children), since each client
// connection is a process of its own.
type cpuSample struct {
	at     time.Time
	groups map[string]map[string]uint64 // group → "pid/start" → ticks
	total  uint64                       // all CPUs, busy ticks (/proc/stat)
}

// cpuGroups names the groups measured, in the order they are printed.
var cpuGroups = []string{"replicas", "postgres", "objectstore", "haproxy", "workers", "bench client"}

func (c *cluster) sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), groups: map[string]map[string]uint64{}}
	add := func(group string, pid int) {
		st, ok := procStat(pid)
		if !ok {
			return
		}
		if s.groups[group] == nil {
			s.groups[group] = map[string]uint64{}
		}
		s.groups[group][fmt.Sprintf("%d/%d", pid, st.start)] = st.cpu
	}
	for i := 1; i <= 3; i++ {
		add("replicas", c.pid(fmt.Sprintf("replica-%d", i)))
	}
	for i := 1; i <= 2; i++ {
		add("workers", c.pid(fmt.Sprintf("worker-%d", i)))
	}
	add("objectstore", c.pid("objectstore"))
	add("haproxy", c.pid("haproxy"))
	add("bench client", os.Getpid())
	if pg := c.pid("postgres"); pg != 0 {
		add("postgres", pg)
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if st, ok := procStat(pid); ok && st.ppid == pg {
				add("postgres", pid)
			}
		}
	}
	s.total = busyTicks()
	return s
}

// busyTicks is the CPU time all cores spent not idle, from /proc/stat.
func busyTicks() uint64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := strings.Fields(sc.Text())[1:]
	var busy uint64
	for i, v := range fields {
		n, _ := strconv.ParseUint(v, 10, 64)
		// idle and iowait; guest time is already in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return busy
}

// cpuUse is the cores each group kept busy between two samples (1.0 is
// one core all the time).
type cpuUse struct {
	cores map[string]float64
	total float64
}

func cpuBetween(a, b cpuSample) cpuUse {
	secs := b.at.Sub(a.at).Seconds()
	u := cpuUse{cores: map[string]float64{}, total: float64(b.total-a.total) / clockTick / secs}
	for g, procs := range b.groups {
		var ticks uint64
		for k, v := range procs {
			// A process born in between counts from zero.
			if v >= a.groups[g][k] {
				ticks += v - a.groups[g][k]
			}
		}
		u.cores[g] = float64(ticks) / clockTick / secs
	}
	return u
}

// String lists the groups that used a tenth of a core or more.
func (u cpuUse) String() string {
	var parts []string
	for _, g := range cpuGroups {
		if u.cores[g] >= 0.1 {
			parts = append(parts, fmt.Sprintf("%s %.2f", g, u.cores[g]))
		}
	}
	return fmt.Sprintf("%.2f of 2 cores busy: %s", u.total, strings.Join(parts, ", "))
}

// limit names the group that used the most CPU.
func (u cpuUse) limit() string {
	best := ""
	for _, g := range cpuGroups {
		if best == "" || u.cores[g] > u.cores[best] {
			best = g
		}
	}
	return best
}
