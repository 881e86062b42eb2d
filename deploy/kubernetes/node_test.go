package kubernetes

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluicehq/sluice/internal/snapshotter"
)

// TestNodeDaemonSet checks the node side: one DaemonSet whose init
// container installs the snapshotter on the host with the configuration
// the ConfigMap holds (which the snapshotter loads), with the CRI proxy on,
// the host's directories where the script writes, and a container that
// sees the sockets the configuration places.
func TestNodeDaemonSet(t *testing.T) {
	m := load(t)
	if len(m.daemonSets) != 1 {
		t.Fatalf("want one DaemonSet, have %d", len(m.daemonSets))
	}
	var ds *appsv1.DaemonSet
	for _, d := range m.daemonSets {
		ds = d
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet %s: selector %v does not select its own pods (%v)", ds.Name, ds.Spec.Selector, err)
	}
	for _, d := range m.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("DaemonSet %s selects the pods of Deployment %s", ds.Name, d.Name)
		}
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("update strategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
	}
	pod := &ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is off: nsenter cannot reach the host's PID 1 and its systemd")
	}
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("want one init container and one container, have %d and %d", len(pod.InitContainers), len(pod.Containers))
	}
	install, main := &pod.InitContainers[0], &pod.Containers[0]
	for _, c := range []*corev1.Container{install, main} {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged: it enters the host's namespaces", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("container %s: no CPU or memory request", c.Name)
		}
	}

	// The init container runs the ConfigMap's script.
	if len(install.Command) != 2 || install.Command[0] != "/bin/sh" {
		t.Fatalf("init container command %q, want /bin/sh and the script", install.Command)
	}
	cm := m.mountedConfigMap(t, pod, install, filepath.Dir(install.Command[1]))
	script, ok := cm.Data[filepath.Base(install.Command[1])]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, filepath.Base(install.Command[1]))
	}
	text, ok := cm.Data["snapshotter.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no snapshotter.yaml", cm.Name)
	}
	local := filepath.Join(t.TempDir(), "snapshotter.yaml")
	if err := os.WriteFile(local, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := snapshotter.LoadConfig(local)
	if err != nil {
		t.Fatalf("sluice-snapshotter would not start on this configuration: %v", err)
	}
	if cfg.CRIProxy.Listen == "" || cfg.CRIProxy.Upstream != snapshotter.DefaultCRIUpstream {
		t.Errorf("criProxy %+v: want it listening, in front of %s", cfg.CRIProxy, snapshotter.DefaultCRIUpstream)
	}
	// The unit install writes runs with the configuration's places.
	for _, want := range []string{"/config/snapshotter.yaml /host/etc/sluice/snapshotter.yaml", "--config /etc/sluice/snapshotter.yaml",
		"--root " + cfg.Root, "--address " + cfg.Address, "--cri-listen " + cfg.CRIProxy.Listen, "systemctl restart sluice-snapshotter"} {
		if !strings.Contains(script, want) {
			t.Errorf("the install script lacks %q", want)
		}
	}

	// Every /host path the script writes is the host's own directory.
	hostPaths := map[string]*corev1.HostPathVolumeSource{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath
		}
	}
	mounted := map[string]bool{}
	for _, vm := range install.VolumeMounts {
		hp, ok := hostPaths[vm.Name]
		if !ok {
			continue
		}
		if vm.MountPath != "/host"+hp.Path {
			t.Errorf("init container mounts the host's %s at %s, want /host%s", hp.Path, vm.MountPath, hp.Path)
		}
		mounted[vm.MountPath] = true
	}
	for _, dir := range []string{"/host/usr/local/bin", "/host/etc/sluice", "/host/etc/containerd", "/host/etc/systemd/system"} {
		if !mounted[dir] {
			t.Errorf("the install script writes under %s, which the init container does not mount from the host", dir)
		}
	}

	// The container sees the sockets where the host has them.
	for _, sock := range []string{cfg.Address, cfg.CRIProxy.Listen} {
		found := false
		for _, vm := range main.VolumeMounts {
			if hp, ok := hostPaths[vm.Name]; ok && vm.MountPath == filepath.Dir(sock) && hp.Path == filepath.Dir(sock) {
				found = true
			}
		}
		if !found {
			t.Errorf("container %s does not mount the host's %s, where %s is", main.Name, filepath.Dir(sock), sock)
		}
		if main.ReadinessProbe == nil || main.ReadinessProbe.Exec == nil || !strings.Contains(strings.Join(main.ReadinessProbe.Exec.Command, " "), sock) {
			t.Errorf("the readiness probe does not check %s", sock)
		}
	}
	if main.LivenessProbe == nil || main.LivenessProbe.Exec == nil || !slices.Contains(main.LivenessProbe.Exec.Command, "sluice-snapshotter") {
		t.Errorf("the liveness probe does not ask systemd about the unit")
	}
}
