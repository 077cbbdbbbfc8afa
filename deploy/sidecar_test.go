package deploy

import (
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/deadlabour/deadlabour/config"
)

// The sidecar variant (kubernetes/sidecar) decodes strictly, and its parts
// agree: the Service points at the sidecar's proxy port, which the config's
// upstream listens on; the proxy's target is the vLLM container on
// localhost; forward.url is the node daemon's admin port at NODE_IP from
// the downward API; the token and tenant secret come from the mounted
// Secret; the GPUs file is shared with the vLLM container.
func TestKubernetesSidecar(t *testing.T) {
	m, k := loadDir(t, filepath.Join(k8sDir, "sidecar"))
	if len(m.configMaps) != 1 || len(m.deployments) != 1 || len(m.services) != 1 || len(m.secrets) != 1 {
		t.Fatalf("want one ConfigMap, Deployment, Service and Secret; got %d, %d, %d, %d",
			len(m.configMaps), len(m.deployments), len(m.services), len(m.secrets))
	}
	cm, dep, svc, sec := m.configMaps[0], m.deployments[0], m.services[0], m.secrets[0]
	cfg, err := config.Parse("sidecar/configmap.yaml config.yaml", []byte(cm.Data["config.yaml"]), -1)
	if err != nil {
		t.Fatalf("the sidecar's config does not validate:\n%v", err)
	}
	if !cfg.Forward.Enabled() || len(cfg.Upstreams) != 1 {
		t.Fatalf("want forwarding mode with one upstream; forward %+v, %d upstreams", cfg.Forward, len(cfg.Upstreams))
	}
	for _, r := range []string{"configmap.yaml", "deployment.yaml", "service.yaml"} {
		if !strings.Contains(strings.Join(k.Resources, " "), r) {
			t.Errorf("kustomization does not apply %s", r)
		}
	}

	// The node daemon's side: its admin port, beyond loopback with a token.
	node, _ := loadManifests(t)
	nodeCfg, err := config.Parse("configmap.yaml config.yaml", []byte(node.configMaps[0].Data["config.yaml"]), -1)
	if err != nil {
		t.Fatal(err)
	}
	nodeHost, nodePort := splitPort(t, nodeCfg.Admin.Listen)
	if nodeHost != "0.0.0.0" || nodeCfg.Admin.TokenFile == "" || !node.daemonSets[0].Spec.Template.Spec.HostNetwork {
		t.Errorf("node admin.listen %s, token_file %q: sidecars reach it on the node's address (hostNetwork), behind a token",
			nodeCfg.Admin.Listen, nodeCfg.Admin.TokenFile)
	}
	if got := cfg.Forward.Target(func(string) string { return "10.0.0.7" }); got != "http://10.0.0.7:"+itoa(nodePort) {
		t.Errorf("forward.url %s, want http://$(NODE_IP):%d", cfg.Forward.URL, nodePort)
	}

	spec := dep.Spec.Template.Spec
	if dep.Spec.Selector == nil || !subset(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) || !subset(svc.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("selectors %v (Deployment), %v (Service) do not select the pods %v", dep.Spec.Selector, svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	var side, vllm *corev1.Container
	for i := range spec.Containers {
		switch spec.Containers[i].Name {
		case "deadlabourd":
			side = &spec.Containers[i]
		case "vllm":
			vllm = &spec.Containers[i]
		}
	}
	if side == nil || vllm == nil {
		t.Fatal("want containers deadlabourd and vllm")
	}
	if _, ok := side.Resources.Limits["nvidia.com/gpu"]; ok {
		t.Error("the sidecar asks for a GPU")
	}
	if _, ok := vllm.Resources.Limits["nvidia.com/gpu"]; !ok {
		t.Error("the vLLM container asks for no GPU")
	}
	u := cfg.Upstreams[0]
	if !strings.HasPrefix(u.Target, "http://127.0.0.1:") || !strings.Contains(strings.Join(vllm.Args, " "), "--port "+u.Target[len("http://127.0.0.1:"):]) {
		t.Errorf("upstream target %s: want vLLM's port on localhost (args %v)", u.Target, vllm.Args)
	}
	// Service -> the sidecar's named port -> the upstream's listen.
	_, listenPort := splitPort(t, u.Listen)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Fatalf("Service %s: want one port, ClusterIP", svc.Name)
	}
	target := svc.Spec.Ports[0].TargetPort.String()
	found := false
	for _, p := range side.Ports {
		if p.Name == target || itoa(p.ContainerPort) == target {
			found = p.ContainerPort == listenPort
		}
	}
	if !found {
		t.Errorf("Service targetPort %s is not the sidecar's port %d (upstream listen %s)", target, listenPort, u.Listen)
	}
	// NODE_IP from the downward API.
	nodeIP := false
	for _, e := range side.Env {
		nodeIP = nodeIP || (e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP")
	}
	if !nodeIP {
		t.Error("no NODE_IP from status.hostIP in the sidecar")
	}
	// Probes on the sidecar's admin listener.
	_, adminPort := splitPort(t, cfg.Admin.Listen)
	for name, p := range map[string]*corev1.Probe{"readiness": side.ReadinessProbe, "liveness": side.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntVal != adminPort {
			t.Errorf("%s probe %v: want the admin port %d", name, p, adminPort)
		}
	}
	// Mounts: config, Secret keys, GPUs file shared with vLLM.
	mountPath := func(c *corev1.Container, match func(corev1.Volume) bool) string {
		for _, v := range spec.Volumes {
			if match(v) {
				for _, m := range c.VolumeMounts {
					if m.Name == v.Name {
						return m.MountPath
					}
				}
			}
		}
		return ""
	}
	if dir := mountPath(side, func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == cm.Name }); !strings.Contains(strings.Join(side.Args, " "), path.Join(dir, "config.yaml")) {
		t.Errorf("the ConfigMap is mounted at %q; args %v", dir, side.Args)
	}
	secDir := mountPath(side, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == sec.Name })
	for key, file := range map[string]string{"admin-token": cfg.Forward.TokenFile, "tenant-secret": cfg.Attribution.TenantSecretFile} {
		if _, ok := sec.StringData[key]; !ok || file != path.Join(secDir, key) {
			t.Errorf("the config reads %q; the Secret's %s is mounted at %s", file, key, path.Join(secDir, key))
		}
	}
	gpuFile, ok := strings.CutPrefix(strings.Join(u.GPUs, ""), config.GPUSourceFile)
	isEmpty := func(v corev1.Volume) bool { return v.EmptyDir != nil && v.Name == "gpus" }
	if !ok || path.Dir(gpuFile) != mountPath(side, isEmpty) || path.Dir(gpuFile) != mountPath(vllm, isEmpty) ||
		!strings.Contains(strings.Join(vllm.Args, " "), "$NVIDIA_VISIBLE_DEVICES\" > "+gpuFile) {
		t.Errorf("gpus %v: want the file the vLLM container writes its NVIDIA_VISIBLE_DEVICES to, in a shared emptyDir", u.GPUs)
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
