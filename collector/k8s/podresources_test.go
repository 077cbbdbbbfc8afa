package k8s

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// fakeKubelet serves the real pod-resources API's List from a fixed answer.
type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	mu    sync.Mutex
	pods  []*podresourcesv1.PodResources
	calls int
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return &podresourcesv1.ListPodResourcesResponse{PodResources: f.pods}, nil
}

func (f *fakeKubelet) set(pods ...*podresourcesv1.PodResources) {
	f.mu.Lock()
	f.pods = pods
	f.mu.Unlock()
}

// serve starts a fake kubelet on a unix socket in a temporary directory
// and returns the socket's path.
func serve(t *testing.T, f *fakeKubelet) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sock
}

func pod(ns, name string, devices ...*podresourcesv1.ContainerDevices) *podresourcesv1.PodResources {
	return &podresourcesv1.PodResources{Namespace: ns, Name: name,
		Containers: []*podresourcesv1.ContainerResources{{Name: "main", Devices: devices}}}
}

func devs(resource string, ids ...string) *podresourcesv1.ContainerDevices {
	return &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: ids}
}

func TestPodResourcesMapsGPUsToPods(t *testing.T) {
	f := &fakeKubelet{}
	f.set(
		pod("llm", "vllm-70b-0", devs("nvidia.com/gpu", "GPU-aaaa", "GPU-bbbb"), devs("example.com/nic", "eth1")),
		pod("llm", "vllm-8b-0", devs("nvidia.com/mig-3g.40gb", "MIG-cccc")),
		pod("batch", "job-1", devs("nvidia.com/gpu.shared", "GPU-dddd::0")),
		pod("batch", "job-2", devs("nvidia.com/gpu.shared", "GPU-dddd::1")),
		pod("web", "no-gpu"),
	)
	p, err := Dial(serve(t, f), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, ok := p.Pod("GPU-aaaa"); ok {
		t.Error("a pod before the first refresh")
	}
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	for uuid, want := range map[string]Pod{
		"GPU-aaaa": {"llm", "vllm-70b-0"},
		"GPU-bbbb": {"llm", "vllm-70b-0"},
		"MIG-cccc": {"llm", "vllm-8b-0"},
	} {
		if got, ok := p.Pod(uuid); !ok || got != want {
			t.Errorf("Pod(%s) = %v, %v; want %v", uuid, got, ok, want)
		}
	}
	for _, uuid := range []string{"eth1", "GPU-dddd", "GPU-dddd::0", "GPU-eeee"} {
		if got, ok := p.Pod(uuid); ok {
			t.Errorf("Pod(%s) = %v: want none (not a GPU, shared by two pods, or not allocated)", uuid, got)
		}
	}

	// A pod deleted and another scheduled: the next refresh sees it.
	f.set(pod("llm", "vllm-70b-1", devs("nvidia.com/gpu", "GPU-aaaa")))
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Pod("GPU-aaaa"); got != (Pod{"llm", "vllm-70b-1"}) {
		t.Errorf("after the pod changed, Pod(GPU-aaaa) = %v", got)
	}
	if got, ok := p.Pod("GPU-bbbb"); ok {
		t.Errorf("a freed GPU still maps to %v", got)
	}
}

// Run refreshes periodically; a kubelet that goes away leaves the last
// mapping in place, and Refresh says why.
func TestPodResourcesRunAndKubeletGone(t *testing.T) {
	f := &fakeKubelet{}
	f.set(pod("llm", "a", devs("nvidia.com/gpu", "GPU-aaaa")))
	sock := serve(t, f)
	p, err := Dial(sock, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := p.Pod("GPU-aaaa"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run never refreshed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done

	q, err := Dial(filepath.Join(t.TempDir(), "absent.sock"), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Refresh(context.Background()); err == nil {
		t.Error("Refresh without a kubelet succeeded")
	}
	if _, err := Dial("", time.Second, nil); err == nil {
		t.Error("Dial without a socket succeeded")
	}
}
