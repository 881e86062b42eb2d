// Package kubernetes holds no code: its test reads the manifests beside it
// as the API server would (strictly, into the Kubernetes API types) and
// checks that they fit together and fit sluiced: the probes reach the
// ports the processes listen on, the workers run conversions while the
// replicas only queue them, the Service and the PodDisruptionBudget select
// the replicas, and every Secret key the pods read exists.
package kubernetes

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/internal/config"
)

const namespace = "sluice"

// manifests is every object of deploy/kubernetes/*.yaml, by kind.
type manifests struct {
	namespaces  []*corev1.Namespace
	secrets     map[string]*corev1.Secret
	configMaps  map[string]*corev1.ConfigMap
	deployments map[string]*appsv1.Deployment
	daemonSets  map[string]*appsv1.DaemonSet
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
}

// load decodes each document of each file by its kind into the API type,
// refusing fields the type does not have, as kubectl's server-side field
// validation would.
func load(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	m := &manifests{secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		deployments: map[string]*appsv1.Deployment{}, daemonSets: map[string]*appsv1.DaemonSet{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(b) {
			if err := m.add(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// documents splits a YAML stream on its "---" lines, leaving out documents
// that hold only comments.
func documents(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		empty := true
		for _, line := range strings.Split(string(d), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				empty = false
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj metav1.Object
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		obj = &corev1.Namespace{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "apps/v1 DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return fmt.Errorf("kind %q of %q: not one this test knows; add it", tm.Kind, tm.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.namespaces = append(m.namespaces, o)
		return nil
	case *corev1.Secret:
		m.secrets[o.Name] = o
	case *corev1.ConfigMap:
		m.configMaps[o.Name] = o
	case *appsv1.Deployment:
		m.deployments[o.Name] = o
	case *appsv1.DaemonSet:
		m.daemonSets[o.Name] = o
	case *corev1.Service:
		m.services = append(m.services, o)
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	}
	if obj.GetNamespace() != namespace {
		return fmt.Errorf("%s %s: namespace %q, want %q", tm.Kind, obj.GetName(), obj.GetNamespace(), namespace)
	}
	return nil
}

func TestManifestsFitTogether(t *testing.T) {
	m := load(t)
	if len(m.namespaces) != 1 || m.namespaces[0].Name != namespace {
		t.Errorf("want one Namespace %q, have %d", namespace, len(m.namespaces))
	}
	registry, worker := m.deployment(t, "registry"), m.deployment(t, "worker")

	if r := registry.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("registry replicas %v, want 3", r)
	}
	if r := worker.Spec.Replicas; r == nil || *r != 2 {
		t.Errorf("worker replicas %v, want 2", r)
	}
	for _, d := range m.deployments {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector %v does not select its own pods (%v)", d.Name, d.Spec.Selector, err)
		}
	}
	regLabels := labels.Set(registry.Spec.Template.Labels)
	workerLabels := labels.Set(worker.Spec.Template.Labels)

	if len(m.services) != 1 {
		t.Fatalf("want one Service, have %d", len(m.services))
	}
	svc := m.services[0]
	svcSel := labels.SelectorFromSet(svc.Spec.Selector)
	if len(svc.Spec.Selector) == 0 || !svcSel.Matches(regLabels) || svcSel.Matches(workerLabels) {
		t.Errorf("Service %s selects %v: want the registry's pods %v and not the workers' %v", svc.Name, svc.Spec.Selector, regLabels, workerLabels)
	}
	regContainer := &registry.Spec.Template.Spec.Containers[0]
	for _, p := range svc.Spec.Ports {
		if _, err := containerPort(regContainer, p.TargetPort); err != nil {
			t.Errorf("Service %s port %s: %v", svc.Name, p.Name, err)
		}
	}

	if len(m.pdbs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, have %d", len(m.pdbs))
	}
	pdb := m.pdbs[0]
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !pdbSel.Matches(regLabels) || pdbSel.Matches(workerLabels) {
		t.Errorf("PodDisruptionBudget %s selects %v: want the registry's pods %v and not the workers' (%v)", pdb.Name, pdb.Spec.Selector, regLabels, err)
	}
	if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(2) {
		t.Errorf("PodDisruptionBudget %s: minAvailable %v, want 2", pdb.Name, pdb.Spec.MinAvailable)
	}
}

// deployment is the one Deployment of the component, with one container.
func (m *manifests) deployment(t *testing.T, component string) *appsv1.Deployment {
	t.Helper()
	var found []*appsv1.Deployment
	for _, d := range m.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			found = append(found, d)
		}
	}
	if len(found) != 1 || len(found[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one Deployment of component %s with one container, have %d", component, len(found))
	}
	return found[0]
}

func TestProcessesAsConfigured(t *testing.T) {
	m := load(t)
	for _, tc := range []struct {
		component   string
		command     string
		wantWorkers func(n int) bool
	}{
		{"registry", "serve", func(n int) bool { return n == 0 }},
		{"worker", "worker", func(n int) bool { return n >= 1 }},
	} {
		t.Run(tc.component, func(t *testing.T) {
			d := m.deployment(t, tc.component)
			pod := &d.Spec.Template.Spec
			c := &pod.Containers[0]
			if len(c.Args) == 0 || c.Args[0] != tc.command {
				t.Fatalf("container %s: args %q, want sluiced %s", c.Name, c.Args, tc.command)
			}
			cfg := m.loadConfig(t, pod, c)
			if cfg.Database.Driver != "postgres" || !strings.HasPrefix(cfg.Database.DSN, "postgres://") {
				t.Errorf("database: driver %q, DSN %q; want postgres with the DSN from the Secret", cfg.Database.Driver, cfg.Database.DSN)
			}
			if !strings.HasPrefix(cfg.Storage.URL, "azblob://") && !strings.HasPrefix(cfg.Storage.URL, "s3://") {
				t.Errorf("storage.url %q: want object storage", cfg.Storage.URL)
			}
			if !tc.wantWorkers(cfg.Streaming.Workers) {
				t.Errorf("%s runs with streaming.workers %d", tc.component, cfg.Streaming.Workers)
			}

			// The address the process serves on: the worker's --listen, or
			// the registry's listen setting.
			listen := cfg.Listen
			if tc.command == "worker" {
				listen = flagValue(c.Args, "--listen")
				if listen == "" {
					t.Fatalf("worker args %q: no --listen, so no probes can reach it", c.Args)
				}
			}
			_, port, err := net.SplitHostPort(listen)
			if err != nil {
				t.Fatalf("listen address %q: %v", listen, err)
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("container %s: no HTTP %s probe", c.Name, p.name)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("container %s: %s probe on %s, want %s", c.Name, p.name, p.probe.HTTPGet.Path, p.path)
				}
				got, err := containerPort(c, p.probe.HTTPGet.Port)
				if err != nil {
					t.Errorf("container %s: %s probe: %v", c.Name, p.name, err)
				} else if strconv.Itoa(int(got)) != port {
					t.Errorf("container %s: %s probe on port %d, but it listens on %s", c.Name, p.name, got, listen)
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("container %s: no CPU or memory request", c.Name)
			}
			grace := time.Duration(30) * time.Second
			if s := pod.TerminationGracePeriodSeconds; s != nil {
				grace = time.Duration(*s) * time.Second
			}
			if tc.command == "serve" && grace <= cfg.DrainDelay.Std()+30*time.Second {
				t.Errorf("terminationGracePeriodSeconds %s: not more than drainDelay %s and the 30s sluiced waits for requests in flight", grace, cfg.DrainDelay.Std())
			}
		})
	}
}

// loadConfig reads the container's configuration as sluiced would: the
// file its --config names, from the ConfigMap mounted there, then its
// environment, with the Secret's values for the variables taken from it.
func (m *manifests) loadConfig(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) config.Config {
	t.Helper()
	file := flagValue(c.Args, "--config")
	if file == "" {
		t.Fatalf("container %s: args %q without --config", c.Name, c.Args)
	}
	cm := m.mountedConfigMap(t, pod, c, filepath.Dir(file))
	text, ok := cm.Data[filepath.Base(file)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, filepath.Base(file))
	}
	var raw struct {
		Database struct{ DSN string }
	}
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Database.DSN != "" {
		t.Errorf("ConfigMap %s: database.dsn is in the file; the DSN (and its password) belongs in the Secret", cm.Name)
	}
	local := filepath.Join(t.TempDir(), "sluiced.yaml")
	if err := os.WriteFile(local, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(local, m.environ(t, c))
	if err != nil {
		t.Fatalf("sluiced would not start on this configuration: %v", err)
	}
	return cfg
}

// mountedConfigMap is the ConfigMap the container has mounted at dir.
func (m *manifests) mountedConfigMap(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, dir string) *corev1.ConfigMap {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				cm, ok := m.configMaps[v.ConfigMap.Name]
				if !ok {
					t.Fatalf("volume %s: no ConfigMap %s in the manifests", v.Name, v.ConfigMap.Name)
				}
				return cm
			}
		}
	}
	t.Fatalf("container %s: no ConfigMap mounted at %s", c.Name, dir)
	return nil
}

// environ is the container's environment, each variable taken from a
// Secret looked up there: its Secret and key must exist.
func (m *manifests) environ(t *testing.T, c *corev1.Container) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				t.Errorf("%s: Secret %s is not in the manifests", e.Name, ref.Name)
				continue
			}
			v, ok := s.StringData[ref.Key]
			if !ok {
				var b []byte
				b, ok = s.Data[ref.Key]
				v = string(b)
			}
			if !ok {
				t.Errorf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env = append(env, e.Name+"="+v)
		default:
			t.Errorf("%s: valueFrom other than a Secret key", e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("container %s: envFrom hides which variables it sets; name them in env", c.Name)
	}
	return env
}

// containerPort resolves a probe's or a Service's port, a number or a
// name, to one the container declares.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %s is not among container %s's ports", p.String(), c.Name)
}

// flagValue is the value of a "--name value" or "--name=value" argument.
func flagValue(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
