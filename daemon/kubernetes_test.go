package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/k8s"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
)

// kubelet serves the pod-resources API with one pod holding GPU uuid.
type kubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	uuid string
}

func (k kubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{
		Namespace: "llm", Name: "vllm-0",
		Containers: []*podresourcesv1.ContainerResources{{Name: "vllm",
			Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{k.uuid}}}}},
	}}}, nil
}

// On Kubernetes: the metrics listener serves /metrics and the probes
// without the admin token and nothing else, and a request's record
// carries the namespace and pod its GPU is allocated to, from the
// kubelet's pod-resources API.
func TestKubernetesMetricsListenerAndPods(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	// The simulator's first GPU (collector/gpu/simulate.go: stable UUIDs).
	podresourcesv1.RegisterPodResourcesListerServer(srv, kubelet{uuid: "GPU-5e1a0000-0000-4000-8000-000000000000"})
	go srv.Serve(ln)
	defer srv.Stop()
	const token = "0123456789abcdef0123"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("k8s.yaml", []byte(fmt.Sprintf(`node: k8s
admin:
  listen: 127.0.0.1:0
  metrics_listen: 127.0.0.1:0
  token_file: %s
kubernetes:
  pod_resources_socket: %s
  refresh: 1s
spool:
  dir: %s
influx:
  url: ""
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: http://127.0.0.1:9
    gpus: [0]
models:
  - name: m
`, tokenFile, sock, filepath.Join(dir, "spool"))), -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := New(ctx, cfg, "h100:1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	get := func(addr, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	metrics, adminAddr := d.metrics.Addr().String(), d.admin.Addr().String()
	if code, body := get(metrics, "/metrics", ""); code != 200 || !strings.Contains(body, `deadlabour_request_energy_joules_total{model="m",upstream="up"} 0`) {
		t.Errorf("metrics listener /metrics: %d, want 200 with the sustainability counters at 0:\n%.500s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(metrics, p, ""); code != 200 && code != 503 {
			t.Errorf("metrics listener %s: %d", p, code)
		}
	}
	for _, p := range []string{"/v1/spool", "/v1/requests/x", "/debug/pprof/"} {
		if code, _ := get(metrics, p, token); code != 404 {
			t.Errorf("metrics listener %s: %d, want 404: it serves metrics and probes only", p, code)
		}
	}
	res, err := http.Post("http://"+metrics+"/v1/requests", "application/json", strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 && res.StatusCode != 405 {
		t.Errorf("metrics listener POST /v1/requests: %d, want no event API", res.StatusCode)
	}
	if code, _ := get(adminAddr, "/metrics", ""); code != 401 {
		t.Errorf("admin listener /metrics without the token: %d, want 401", code)
	}

	// A request on GPU 0, once the kubelet has been asked.
	deadline := time.Now().Add(20 * time.Second)
	for _, ok := d.pods.Pod("GPU-5e1a0000-0000-4000-8000-000000000000"); !ok; _, ok = d.pods.Pod("GPU-5e1a0000-0000-4000-8000-000000000000") {
		if time.Now().After(deadline) {
			t.Fatal("the kubelet was never listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	post := func(body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/v1/requests", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/requests %s: %d %s", body, res.StatusCode, b)
		}
	}
	now := func() string { return time.Now().UTC().Format(time.RFC3339Nano) }
	post(`{"type":"begin","id":"k-1","upstream":"up","model":"m","start":"` + now() + `"}`)
	time.Sleep(200 * time.Millisecond)
	post(`{"type":"end","id":"k-1","upstream":"up","end":"` + now() + `","prompt_tokens":10,"completion_tokens":5}`)
	for {
		_, lines := get(adminAddr, "/v1/spool?measurement=deadlabour_request", token)
		if strings.Contains(lines, `request_id="k-1"`) {
			if !strings.Contains(lines, `namespace="llm"`) || !strings.Contains(lines, `pod="vllm-0"`) {
				t.Errorf("the record lacks its pod:\n%s", lines)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no record of k-1 in the spool")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookup is a fixed Lookup.
type lookup map[string]k8s.Pod

func (l lookup) Pod(uuid string) (k8s.Pod, bool) { p, ok := l[uuid]; return p, ok }

// spanRec keeps what reaches the queue.
type spanRec struct{ got []estimator.Span }

func (r *spanRec) Begin(s estimator.Span)  { r.got = append(r.got, s) }
func (r *spanRec) End(s estimator.Span)    { r.got = append(r.got, s) }
func (r *spanRec) Submit(s estimator.Span) { r.got = append(r.got, s) }

// A span is stamped with the pod of its first device: a GPU's UUID, a MIG
// instance's MIG UUID, else its board's (a pod holding the whole GPU).
func TestPodSpans(t *testing.T) {
	gpus := []gpu.DeviceInfo{
		{ID: "0", UUID: "GPU-0"},
		{ID: "1", UUID: "GPU-1", MIG: true, Instances: []gpu.MIGInstance{{ID: "1/1", UUID: "MIG-11"}, {ID: "1/2", UUID: "MIG-12"}}},
	}
	pods := lookup{"GPU-0": {Namespace: "a", Name: "p0"}, "MIG-12": {Namespace: "b", Name: "p12"}, "GPU-1": {Namespace: "c", Name: "whole"}}
	rec := &spanRec{}
	p := newPodSpans(rec, pods, gpus)
	p.Begin(estimator.Span{Devices: []string{"0", "1/1"}})
	p.End(estimator.Span{Devices: []string{"1/2"}})
	p.Submit(estimator.Span{Devices: []string{"1/1"}})
	p.End(estimator.Span{})
	p.End(estimator.Span{Devices: []string{"7"}})
	want := [][2]string{{"a", "p0"}, {"b", "p12"}, {"c", "whole"}, {"", ""}, {"", ""}}
	for i, s := range rec.got {
		if got := [2]string{s.Namespace, s.Pod}; got != want[i] {
			t.Errorf("span %d on %v: pod %v, want %v", i, s.Devices, got, want[i])
		}
	}
}
