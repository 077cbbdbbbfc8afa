// Package k8s maps GPUs to the Kubernetes pods they are allocated to, from
// the kubelet's pod-resources API (the gRPC service on
// /var/lib/kubelet/pod-resources/kubelet.sock that dcgm-exporter reads):
// List names every pod's containers' devices, and the NVIDIA device
// plugin's device ids are GPU UUIDs (nvidia.com/gpu) or MIG device UUIDs
// (nvidia.com/mig-<profile>).
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultSocket is where the kubelet serves the pod-resources API.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// listTimeout bounds one List call.
const listTimeout = 10 * time.Second

// maxMessage bounds a List answer (the kubelet's own limit is 16 MiB).
const maxMessage = 16 << 20

// Pod names a pod.
type Pod struct {
	Namespace string
	Name      string
}

// Lookup maps a GPU or MIG device UUID to the pod it is allocated to.
type Lookup interface {
	Pod(uuid string) (Pod, bool)
}

// PodResources is a Lookup refreshed from the kubelet: Refresh lists the
// pods' devices once, Run every interval. Pod may be called from any
// goroutine.
type PodResources struct {
	socket string
	every  time.Duration
	log    *slog.Logger
	conn   *grpc.ClientConn
	client podresourcesv1.PodResourcesListerClient
	pods   atomic.Pointer[map[string]Pod] // UUID -> pod

	mu    sync.Mutex // one Refresh at a time
	state string     // the last refresh's outcome, so that each change is logged once
}

// Dial makes a client of the pod-resources API on the unix socket at
// socket; it connects on first use, so a kubelet not up yet is not an
// error here.
func Dial(socket string, every time.Duration, log *slog.Logger) (*PodResources, error) {
	if socket == "" {
		return nil, errors.New("k8s: no pod-resources socket")
	}
	if every <= 0 {
		return nil, fmt.Errorf("k8s: refresh interval %v, want more than 0", every)
	}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("k8s: pod-resources socket %s: %w", socket, err)
	}
	p := &PodResources{socket: socket, every: every, log: log, conn: conn, client: podresourcesv1.NewPodResourcesListerClient(conn)}
	p.pods.Store(&map[string]Pod{})
	return p, nil
}

// Pod implements Lookup, as of the last successful refresh.
func (p *PodResources) Pod(uuid string) (Pod, bool) {
	pod, ok := (*p.pods.Load())[uuid]
	return pod, ok
}

// Refresh lists the pods' GPUs once. On an error the last mapping stays.
func (p *PodResources) Refresh(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	resp, err := p.client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		p.logState(fmt.Sprintf("cannot list pod resources: %v", err), err)
		return fmt.Errorf("k8s: %s: %w", p.socket, err)
	}
	pods := GPUPods(resp)
	p.pods.Store(&pods)
	p.logState(fmt.Sprintf("%d GPU(s) allocated to pods", len(pods)), nil)
	return nil
}

func (p *PodResources) logState(state string, err error) {
	if state == p.state || p.log == nil {
		return
	}
	p.state = state
	if err != nil {
		p.log.Warn("kubelet pod-resources: records keep the last GPU-to-pod mapping", "socket", p.socket, "err", err)
		return
	}
	p.log.Info("kubelet pod-resources: GPUs mapped to pods", "socket", p.socket, "state", state)
}

// Run refreshes at once and then every interval until ctx is done.
func (p *PodResources) Run(ctx context.Context) {
	for {
		p.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.every):
		}
	}
}

// Close closes the connection.
func (p *PodResources) Close() error { return p.conn.Close() }

// GPUPods maps the device UUIDs of NVIDIA GPUs and MIG devices in a List
// answer to their pods. A time-sliced replica's id (GPU-...::2) counts as
// its GPU; a GPU allocated to several pods (time-slicing) maps to none, as
// its requests cannot be told apart by device.
func GPUPods(resp *podresourcesv1.ListPodResourcesResponse) map[string]Pod {
	out := map[string]Pod{}
	shared := map[string]bool{}
	for _, pr := range resp.GetPodResources() {
		pod := Pod{Namespace: pr.GetNamespace(), Name: pr.GetName()}
		for _, c := range pr.GetContainers() {
			for _, d := range c.GetDevices() {
				if !IsGPUResource(d.GetResourceName()) {
					continue
				}
				for _, id := range d.GetDeviceIds() {
					id, _, _ = strings.Cut(id, "::")
					if prev, ok := out[id]; ok && prev != pod {
						shared[id] = true
					}
					out[id] = pod
				}
			}
		}
	}
	for id := range shared {
		delete(out, id)
	}
	return out
}

// IsGPUResource reports whether a device plugin resource is an NVIDIA GPU
// (nvidia.com/gpu, nvidia.com/gpu.shared under time-slicing) or MIG device
// (nvidia.com/mig-3g.40gb).
func IsGPUResource(name string) bool {
	return name == "nvidia.com/gpu" || strings.HasPrefix(name, "nvidia.com/gpu.") || strings.HasPrefix(name, "nvidia.com/mig-")
}
