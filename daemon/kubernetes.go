package daemon

import (
	"context"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/k8s"
	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/estimator"
)

// podSpans stamps every span with the Kubernetes pod its first GPU is
// allocated to before it reaches the queue.
type podSpans struct {
	next  requests.EventSink
	pods  k8s.Lookup
	uuids map[string][]string // device id -> its UUIDs, most specific first
}

// newPodSpans wraps q; uuids come from the GPUs found at start: a GPU's
// id maps to its UUID, a MIG instance's to its MIG UUID, then its GPU's
// (a pod may hold the whole board).
func newPodSpans(q requests.EventSink, pods k8s.Lookup, gpus []gpu.DeviceInfo) *podSpans {
	p := &podSpans{next: q, pods: pods, uuids: map[string][]string{}}
	for _, g := range gpus {
		p.uuids[g.ID] = []string{g.UUID}
		for _, in := range g.Instances {
			p.uuids[in.ID] = []string{in.UUID, g.UUID}
		}
	}
	return p
}

func (p *podSpans) stamp(s estimator.Span) estimator.Span {
	if len(s.Devices) == 0 {
		return s
	}
	for _, uuid := range p.uuids[s.Devices[0]] {
		if pod, ok := p.pods.Pod(uuid); ok {
			s.Namespace, s.Pod = pod.Namespace, pod.Name
			return s
		}
	}
	return s
}

// Begin implements requests.Recorder.
func (p *podSpans) Begin(s estimator.Span) { p.next.Begin(p.stamp(s)) }

// End implements requests.Recorder.
func (p *podSpans) End(s estimator.Span) { p.next.End(p.stamp(s)) }

// Submit implements requests.EventSink.
func (p *podSpans) Submit(s estimator.Span) { p.next.Submit(p.stamp(s)) }

// spans is where the proxies and the event API report: the queue, through
// the pod lookup on Kubernetes.
func (d *Daemon) spans() requests.EventSink {
	if d.fwd != nil {
		return d.fwd
	}
	if d.pods == nil {
		return d.queue
	}
	var gpus []gpu.DeviceInfo
	if d.gpu != nil {
		gpus = d.gpu.Devices()
	}
	return newPodSpans(d.queue, d.pods, gpus)
}

// newPods opens the kubelet's pod-resources API when the config names its
// socket; nothing is listed before Run.
func (d *Daemon) newPods() error {
	k := d.cfg.Kubernetes
	if k.PodResourcesSocket == "" {
		return nil
	}
	p, err := k8s.Dial(k.PodResourcesSocket, k.Refresh.D(), d.log.With("component", "kubernetes"))
	if err != nil {
		return err
	}
	d.pods = p
	return nil
}

// startPods lists the pods' GPUs at once and then every refresh, until
// the returned stop is called; stop waits for it and closes the client.
func (d *Daemon) startPods(ctx context.Context) (stop func()) {
	if d.pods == nil {
		return func() {}
	}
	stopRun := startOwned(ctx, d.pods.Run)
	return func() {
		stopRun()
		d.pods.Close()
	}
}
