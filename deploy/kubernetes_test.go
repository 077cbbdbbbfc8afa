package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	yaml3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/deadlabour/deadlabour/config"
)

const k8sDir = "kubernetes"

// manifests are the objects of deploy/kubernetes, each decoded strictly
// (an unknown or misspelt field is an error) into its k8s.io/api type.
type manifests struct {
	namespaces      []corev1.Namespace
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	daemonSets      []appsv1.DaemonSet
	deployments     []appsv1.Deployment
	services        []corev1.Service
	networkPolicies []networkingv1.NetworkPolicy
	serviceMonitors []serviceMonitor
}

// serviceMonitor is the part of the Prometheus operator's ServiceMonitor
// (monitoring.coreos.com/v1) the manifests use, field for field as the
// operator's CRD names them; decoded strictly too, so a misspelt or
// unsupported field fails.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		JobLabel  string `json:"jobLabel,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels,omitempty"`
				Separator    string   `json:"separator,omitempty"`
				TargetLabel  string   `json:"targetLabel,omitempty"`
				Regex        string   `json:"regex,omitempty"`
				Replacement  string   `json:"replacement,omitempty"`
				Action       string   `json:"action,omitempty"`
			} `json:"relabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is the part of a Kustomization this directory uses;
// decoded strictly too.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// documents splits a YAML stream into its documents.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml3.NewDecoder(bytes.NewReader(b))
	var docs [][]byte
	for {
		var n yaml3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out, err := yaml3.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
}

func loadManifests(t *testing.T) (manifests, kustomization) {
	return loadDir(t, k8sDir)
}

// loadDir decodes the manifests of one directory.
func loadDir(t *testing.T, dir string) (manifests, kustomization) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var m manifests
	var k kustomization
	for _, f := range files {
		for i, doc := range documents(t, f) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "v1 Namespace":
				obj = grow(&m.namespaces)
			case "v1 ConfigMap":
				obj = grow(&m.configMaps)
			case "v1 Secret":
				obj = grow(&m.secrets)
			case "apps/v1 DaemonSet":
				obj = grow(&m.daemonSets)
			case "apps/v1 Deployment":
				obj = grow(&m.deployments)
			case "v1 Service":
				obj = grow(&m.services)
			case "networking.k8s.io/v1 NetworkPolicy":
				obj = grow(&m.networkPolicies)
			case "monitoring.coreos.com/v1 ServiceMonitor":
				obj = grow(&m.serviceMonitors)
			case "kustomize.config.k8s.io/v1beta1 Kustomization":
				obj = &k
			default:
				t.Fatalf("%s document %d: %s %s is not linted by this test", f, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, meta.Kind, err)
			}
		}
	}
	return m, k
}

// The manifests decode strictly into the Kubernetes API types, and hold
// together: the DaemonSet runs on GPU nodes through the NVIDIA runtime
// without taking GPUs from the inference pods, mounts the ConfigMap and
// Secret where the config looks for them, probes the admin listener the
// config opens, and the config itself passes deadlabourd's validation.
func TestKubernetesManifests(t *testing.T) {
	m, k := loadManifests(t)
	if len(m.namespaces) != 1 || len(m.configMaps) != 1 || len(m.secrets) != 1 || len(m.daemonSets) != 1 {
		t.Fatalf("want one Namespace, ConfigMap, Secret and DaemonSet; got %d, %d, %d, %d",
			len(m.namespaces), len(m.configMaps), len(m.secrets), len(m.daemonSets))
	}
	ns := m.namespaces[0].Name
	cm, sec, ds := m.configMaps[0], m.secrets[0], m.daemonSets[0]
	for _, meta := range []struct {
		kind, name, namespace string
		labels                map[string]string
	}{
		{"ConfigMap", cm.Name, cm.Namespace, cm.Labels},
		{"Secret", sec.Name, sec.Namespace, sec.Labels},
		{"DaemonSet", ds.Name, ds.Namespace, ds.Labels},
	} {
		if meta.namespace != ns {
			t.Errorf("%s %s: namespace %q, want %q", meta.kind, meta.name, meta.namespace, ns)
		}
		if meta.labels["app.kubernetes.io/part-of"] != "deadlabour" {
			t.Errorf("%s %s: no app.kubernetes.io/part-of label", meta.kind, meta.name)
		}
	}

	// The config: valid, and what the DaemonSet mounts.
	cfgText, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no config.yaml", cm.Name)
	}
	cfg, err := config.Parse("configmap.yaml config.yaml", []byte(cfgText), -1)
	if err != nil {
		t.Fatalf("the ConfigMap's config does not validate:\n%v", err)
	}

	spec := ds.Spec.Template.Spec
	if ds.Spec.Selector == nil || !subset(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("DaemonSet selector %v does not select its pods %v", ds.Spec.Selector, ds.Spec.Template.Labels)
	}
	if spec.RuntimeClassName == nil || *spec.RuntimeClassName != "nvidia" {
		t.Errorf("runtimeClassName %v, want nvidia", spec.RuntimeClassName)
	}
	if len(spec.NodeSelector) == 0 {
		t.Error("no nodeSelector: the DaemonSet would run on nodes without GPUs")
	}
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %q: want the host network with cluster DNS", spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the daemon needs no Kubernetes API token: set automountServiceAccountToken: false")
	}
	if got, want := grace(spec), unitStopTimeout(t); got < want {
		t.Errorf("terminationGracePeriodSeconds %v, shorter than the systemd unit's TimeoutStopSec %v", got, want)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if img := c.Image; !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
		t.Errorf("image %q: pin a tag", img)
	}
	if k.Images == nil || !strings.HasPrefix(c.Image, k.Images[0].Name+":") {
		t.Errorf("kustomization images %v do not name the container image %s", k.Images, c.Image)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["NVIDIA_VISIBLE_DEVICES"] != "all" || !strings.Contains(env["NVIDIA_DRIVER_CAPABILITIES"], "utility") {
		t.Errorf("env %v: want NVIDIA_VISIBLE_DEVICES=all and the utility (NVML) capability", env)
	}
	for _, rl := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		for name := range rl {
			if strings.Contains(string(name), "nvidia.com") {
				t.Errorf("the container asks for %s: that would take GPUs from the inference pods", name)
			}
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %v: want CPU and memory requests and a memory limit", c.Resources)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		(sc.Privileged != nil && *sc.Privileged) || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want no privilege escalation, a read-only root, not privileged, all capabilities dropped", sc)
	}

	// Arguments, mounts and the paths in the config agree.
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for name := range mounts {
		if _, ok := volumes[name]; !ok {
			t.Errorf("volumeMount %s has no volume", name)
		}
	}
	mountOf := func(check func(corev1.Volume) bool) string {
		for name, v := range volumes {
			if check(v) {
				return mounts[name].MountPath
			}
		}
		return ""
	}
	cfgDir := mountOf(func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == cm.Name })
	if i := slices.Index(c.Args, "--config"); cfgDir == "" || i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != path.Join(cfgDir, "config.yaml") {
		t.Errorf("args %v: want --config %s/config.yaml, where the ConfigMap is mounted", c.Args, cfgDir)
	}
	secDir := mountOf(func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == sec.Name })
	for key, file := range map[string]string{"influx-token": cfg.Influx.TokenFile, "tenant-secret": cfg.Attribution.TenantSecretFile, "admin-token": cfg.Admin.TokenFile} {
		if _, ok := sec.StringData[key]; !ok {
			t.Errorf("Secret %s has no key %s", sec.Name, key)
		}
		if file != path.Join(secDir, key) {
			t.Errorf("the config reads %q; the Secret's %s is mounted at %s", file, key, path.Join(secDir, key))
		}
	}
	if cfg.Influx.TokenEnv != "" {
		t.Errorf("influx.token_env %q: the token comes from the Secret's file", cfg.Influx.TokenEnv)
	}
	hostPaths := map[string]string{} // host path -> mount
	for name, v := range volumes {
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = mounts[name].MountPath
		}
	}
	if dir := hostPaths["/var/lib/deadlabour"]; dir == "" || !strings.HasPrefix(cfg.Spool.Dir, dir+"/") || mounts["state"].ReadOnly {
		t.Errorf("spool.dir %s is not on the node's disk (hostPath /var/lib/deadlabour mounted at %q, writable)", cfg.Spool.Dir, dir)
	}
	if sys := hostPaths["/sys"]; sys == "" || cfg.Host.SysfsRoot != sys {
		t.Errorf("host.sysfs_root %s: want the node's /sys, mounted at %q (RAPL is masked in the container's own)", cfg.Host.SysfsRoot, sys)
	}

	// Ports: every listener the config opens is declared; the probes hit
	// the admin listener.
	declared := map[int32]bool{}
	for _, p := range c.Ports {
		declared[p.ContainerPort] = true
		if p.HostPort != p.ContainerPort {
			t.Errorf("port %s: hostPort %d, containerPort %d: equal on the host network", p.Name, p.HostPort, p.ContainerPort)
		}
	}
	adminHost, adminPort := splitPort(t, cfg.Admin.Listen)
	listens := []string{cfg.Admin.Listen}
	for _, u := range cfg.Upstreams {
		listens = append(listens, u.Listen)
	}
	for _, l := range listens {
		if _, p := splitPort(t, l); !declared[p] {
			t.Errorf("the config listens on %s; the container does not declare port %d", l, p)
		}
	}
	for name, probe := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", name)
			continue
		}
		g := probe.HTTPGet
		if g.Port.IntVal != adminPort || (g.Host != adminHost && !(adminHost == "0.0.0.0" && g.Host == "127.0.0.1")) {
			t.Errorf("%s probe %s:%d, admin listens on %s", name, g.Host, g.Port.IntVal, cfg.Admin.Listen)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %s, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}

	// The kustomization applies every manifest but the Secret (made by hand).
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && b != "secret.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if fmt.Sprint(got) != fmt.Sprint(want) || k.Namespace != ns {
		t.Errorf("kustomization: resources %v in %q, want %v in %q", got, k.Namespace, want, ns)
	}
}

// grow appends a zero T and returns a pointer to it.
func grow[T any](s *[]T) *T {
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return len(a) > 0
}

func grace(spec corev1.PodSpec) time.Duration {
	if spec.TerminationGracePeriodSeconds == nil {
		return 30 * time.Second // Kubernetes' default
	}
	return time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
}

// unitStopTimeout is TimeoutStopSec of the systemd unit, whose own test
// holds it above the daemon's shutdown deadlines.
func unitStopTimeout(t *testing.T) time.Duration {
	t.Helper()
	f, err := os.Open("../systemd/deadlabourd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "TimeoutStopSec="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("TimeoutStopSec=%s: %v", v, err)
			}
			return d
		}
	}
	t.Fatal("the unit has no TimeoutStopSec")
	return 0
}

func splitPort(t *testing.T, addr string) (string, int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, int32(p)
}

// A misspelt field fails the strict decoding the lint relies on.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      hostNetwrok: true\n")
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(doc, &ds); err == nil || !strings.Contains(err.Error(), "hostNetwrok") {
		t.Errorf("a misspelt field decoded: %v", err)
	}
}

// The pieces for a cluster's Prometheus and the pod mapping hold
// together: the DaemonSet opens the metrics listener the config names on
// a declared port, mounts the kubelet's pod-resources socket where the
// config looks for it, runs node-critical with MIG devices visible and the
// host's PIDs where an upstream names its processes; the headless Service
// selects its pods on that port, the NetworkPolicy opens only declared
// ports, and the ServiceMonitor of ./prometheus scrapes the Service's port.
func TestKubernetesPrometheusAndPods(t *testing.T) {
	m, _ := loadManifests(t)
	ds, cm := m.daemonSets[0], m.configMaps[0]
	cfg, err := config.Parse("configmap.yaml config.yaml", []byte(cm.Data["config.yaml"]), -1)
	if err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", spec.PriorityClassName)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["NVIDIA_MIG_MONITOR_DEVICES"] != "all" {
		t.Error("NVIDIA_MIG_MONITOR_DEVICES is not all: MIG devices would be hidden from NVML")
	}
	namesProcesses := false
	for _, u := range cfg.Upstreams {
		namesProcesses = namesProcesses || u.ProcessName != "" || u.PIDFile != ""
	}
	if spec.HostPID != namesProcesses {
		t.Errorf("hostPID %v; an upstream names its processes: %v (NVML lists host PIDs: hostPID exactly when needed)", spec.HostPID, namesProcesses)
	}

	// The metrics listener: configured beyond loopback, declared.
	if cfg.Admin.MetricsListen == "" {
		t.Fatal("the config opens no admin.metrics_listen for Prometheus")
	}
	host, metricsPort := splitPort(t, cfg.Admin.MetricsListen)
	if host != "0.0.0.0" && host != "" {
		t.Errorf("admin.metrics_listen %s: Prometheus scrapes the node's address", cfg.Admin.MetricsListen)
	}
	if adminHost, _ := splitPort(t, cfg.Admin.Listen); adminHost != "127.0.0.1" && cfg.Admin.TokenFile == "" {
		t.Errorf("admin.listen %s: the event API and records beyond loopback need admin.token_file", cfg.Admin.Listen)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != metricsPort {
		t.Errorf("container port metrics %d, admin.metrics_listen %s", ports["metrics"], cfg.Admin.MetricsListen)
	}

	// The pod-resources socket is on the node's kubelet directory, writable.
	if cfg.Kubernetes.PodResourcesSocket == "" {
		t.Fatal("kubernetes.pod_resources_socket is not set: records would carry no pod")
	}
	mounted := false
	for _, v := range spec.Volumes {
		if v.HostPath == nil || v.HostPath.Path != "/var/lib/kubelet/pod-resources" {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name && !vm.ReadOnly && cfg.Kubernetes.PodResourcesSocket == path.Join(vm.MountPath, "kubelet.sock") {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("kubernetes.pod_resources_socket %s is not the kubelet's /var/lib/kubelet/pod-resources mounted writable", cfg.Kubernetes.PodResourcesSocket)
	}

	// The Service selects the DaemonSet's pods on the metrics port.
	if len(m.services) != 1 {
		t.Fatalf("%d Services, want 1", len(m.services))
	}
	svc := m.services[0]
	if !subset(svc.Spec.Selector, ds.Spec.Template.Labels) || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: selector %v, clusterIP %q: want the DaemonSet's pods %v, headless", svc.Name, svc.Spec.Selector, svc.Spec.ClusterIP, ds.Spec.Template.Labels)
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
		if p.TargetPort.String() != "metrics" || p.Port != metricsPort {
			t.Errorf("Service port %s: %d -> %s, want %d -> the container's metrics port", p.Name, p.Port, p.TargetPort.String(), metricsPort)
		}
	}

	// The NetworkPolicy selects the pods and opens only declared ports.
	if len(m.networkPolicies) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(m.networkPolicies))
	}
	np := m.networkPolicies[0]
	if !subset(np.Spec.PodSelector.MatchLabels, ds.Spec.Template.Labels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy %s does not restrict ingress to the DaemonSet's pods", np.Name)
	}
	opened := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil || ports[p.Port.String()] == 0 {
				t.Errorf("NetworkPolicy opens port %v, which the container does not declare by name", p.Port)
				continue
			}
			opened[p.Port.String()] = true
		}
	}
	if !opened["metrics"] || opened["admin"] {
		t.Errorf("NetworkPolicy opens %v: want the metrics port, never the admin one", opened)
	}
	for _, o := range []struct {
		kind, namespace string
		labels          map[string]string
	}{{"Service", svc.Namespace, svc.Labels}, {"NetworkPolicy", np.Namespace, np.Labels}} {
		if o.namespace != m.namespaces[0].Name || o.labels["app.kubernetes.io/part-of"] != "deadlabour" {
			t.Errorf("%s: namespace %q, labels %v", o.kind, o.namespace, o.labels)
		}
	}

	// ./prometheus: everything above and a ServiceMonitor of the Service.
	pm, pk := loadDir(t, filepath.Join(k8sDir, "prometheus"))
	if len(pm.serviceMonitors) != 1 || len(pm.daemonSets)+len(pm.services) != 0 {
		t.Fatalf("prometheus/: want one ServiceMonitor and nothing else; got %+v", pm)
	}
	if !slices.Contains(pk.Resources, "..") || !slices.Contains(pk.Resources, "servicemonitor.yaml") || pk.Namespace != m.namespaces[0].Name {
		t.Errorf("prometheus/kustomization.yaml: resources %v in %q, want .. and servicemonitor.yaml", pk.Resources, pk.Namespace)
	}
	sm := pm.serviceMonitors[0]
	if !subset(sm.Spec.Selector.MatchLabels, svc.Labels) || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) || sm.Metadata.Namespace != svc.Namespace {
		t.Errorf("ServiceMonitor selects %v in %v, the Service is %v in %s", sm.Spec.Selector.MatchLabels, sm.Spec.NamespaceSelector.MatchNames, svc.Labels, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoints")
	}
	for _, e := range sm.Spec.Endpoints {
		if !svcPorts[e.Port] || e.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %s%s: want a port of the Service and /metrics", e.Port, e.Path)
		}
		iv, err1 := time.ParseDuration(e.Interval)
		to, err2 := time.ParseDuration(e.ScrapeTimeout)
		if err1 != nil || err2 != nil || to > iv {
			t.Errorf("ServiceMonitor interval %q, scrapeTimeout %q: want durations, the timeout within the interval", e.Interval, e.ScrapeTimeout)
		}
	}
}
