package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pass is one timed read of a set of files.
type pass struct {
	files   int
	bytes   int64
	elapsed time.Duration
}

func (p pass) mbPerSec() float64    { return float64(p.bytes) / 1e6 / p.elapsed.Seconds() }
func (p pass) filesPerSec() float64 { return float64(p.files) / p.elapsed.Seconds() }

// largestFiles lists the n largest regular files under root, by their
// paths relative to it, largest first, and their total size.
func largestFiles(root string, n int) ([]string, int64, error) {
	type file struct {
		path string
		size int64
	}
	var all []file
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		all = append(all, file{rel, info.Size()})
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].size > all[j].size || all[i].size == all[j].size && all[i].path < all[j].path
	})
	var out []string
	var total int64
	for _, f := range all[:min(n, len(all))] {
		out = append(out, f.path)
		total += f.size
	}
	return out, total, nil
}

// readSequential reads each file from start to end with reads of bufSize,
// one file after another, as a program loading a large library or a tool
// copying a file does.
func readSequential(root string, files []string, bufSize int) (pass, error) {
	buf := make([]byte, bufSize)
	var p pass
	start := time.Now()
	for _, name := range files {
		n, err := readFile(filepath.Join(root, name), buf)
		if err != nil {
			return p, err
		}
		p.files++
		p.bytes += n
	}
	p.elapsed = time.Since(start)
	return p, nil
}

// readFile reads a file whole with reads of len(buf), in plain system
// calls as a C program or Python does: os.File would also add each file to
// Go's poller, two epoll_ctl calls that fail at once for a file on ext4 but
// not for one on FUSE.
func readFile(path string, buf []byte) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return total, nil
		}
		total += int64(n)
	}
}

// walkSmall walks the tree under root in name order and opens and reads
// every regular file smaller than maxSize whole, as an interpreter
// importing modules or a scanner going over an image does: directory
// listings, lookups and attributes count as much as the bytes.
func walkSmall(root string, maxSize int64) (pass, error) {
	buf := make([]byte, maxSize)
	var p pass
	start := time.Now()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() >= maxSize {
			return nil
		}
		n, err := readFile(path, buf)
		if err != nil {
			return err
		}
		if n != info.Size() {
			return fmt.Errorf("read %s: %d bytes, its size is %d", path, n, info.Size())
		}
		p.files++
		p.bytes += n
		return nil
	})
	p.elapsed = time.Since(start)
	return p, err
}

// readAll reads every regular file under root whole, once.
func readAll(root string) (pass, error) {
	buf := make([]byte, 1<<20)
	var p pass
	start := time.Now()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n, err := readFile(path, buf)
		if err != nil {
			return err
		}
		p.files++
		p.bytes += n
		return nil
	})
	p.elapsed = time.Since(start)
	return p, err
}

// dropCaches writes dirty pages back and drops the page cache, dentries
// and inodes, so that the next read of a file goes to its file system (for
// overlayfs, the disk; for a lazily mounted layer, the FUSE server).
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
