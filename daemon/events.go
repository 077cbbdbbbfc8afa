package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/collector/requests"
)

// newEvents makes the event API (POST /v1/requests), reporting to the span
// queue like the proxies.
func (d *Daemon) newEvents(tenantSecret []byte) error {
	e, err := requests.NewEvents(requests.EventOptions{
		History: d.cfg.Attribution.History.D(), SettleDelay: d.cfg.Attribution.SettleDelay.D(),
		TenantSecret: tenantSecret, TenantRaw: d.cfg.Admin.EventTenantRaw,
		Devices: d.eventDevices, Now: nowFunc, Logger: d.log.With("component", "events"),
	}, d.spans())
	if err != nil {
		return fmt.Errorf("event API: %w", err)
	}
	d.events = e
	d.restoreEventsEnded()
	return nil
}

// eventsEndedFile holds, in the spool directory, the ids the event API had
// ended, or left to be recorded as abandoned, when the daemon last
// stopped: an end posted for one of them after a restart is answered as a
// duplicate, not recorded a second time.
const eventsEndedFile = "events-ended.json"

// restoreEventsEnded gives the event API the ids the last process ended.
// A missing file is a first start (or a crash: nothing was saved); an
// unreadable one is logged and left, never a reason not to start.
func (d *Daemon) restoreEventsEnded() {
	path := filepath.Join(d.cfg.Spool.Dir, eventsEndedFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var ids []requests.EndedID
	if err == nil {
		err = json.Unmarshal(data, &ids)
	}
	if err != nil {
		d.log.Warn("event API: cannot read the ids the last run ended; an end posted for one of them is recorded again", "file", path, "err", err)
		return
	}
	d.events.RestoreEnded(ids)
}

// saveEventsEnded keeps the event API's ended ids for the next process.
// Called once the event API takes no more events.
func (d *Daemon) saveEventsEnded() {
	path := filepath.Join(d.cfg.Spool.Dir, eventsEndedFile)
	data, err := json.Marshal(d.events.Ended())
	if err == nil {
		// Synced and renamed over the old one: a power loss leaves the
		// old file or the new, whole.
		err = renameio.WriteFile(path, data, 0o600)
	}
	if err != nil {
		d.log.Warn("event API: cannot keep the ids it ended for the next run; an end posted across the restart would be recorded again", "file", path, "err", err)
	}
}

// registerEvents adds the event API to the admin router.
func (d *Daemon) registerEvents(mux *http.ServeMux) {
	if d.events != nil {
		mux.Handle(admin.PatternEvents, d.eventGate.wrap(d.events))
	}
}

// eventDevices maps an event's upstream and gpus to device ids: the gpus it
// names (indices or UUIDs of GPUs on this node), else the GPUs of the
// configured upstream of that name.
func (d *Daemon) eventDevices(upstream string, gpus []string) ([]string, error) {
	if len(gpus) > 0 {
		return d.upstreamDevicesStrict(gpus)
	}
	for _, u := range d.cfg.Upstreams {
		if u.Name == upstream {
			return d.upstreamDevices(u), nil
		}
	}
	return nil, fmt.Errorf("upstream %q is not in the config: name the GPUs it runs on in gpus", upstream)
}

// upstreamDevicesStrict maps GPU indices or UUIDs (GPU or MIG) to device
// ids, refusing any that is not on this node.
func (d *Daemon) upstreamDevicesStrict(gpus []string) ([]string, error) {
	if d.gpu == nil {
		return nil, fmt.Errorf("this node has no GPUs to charge")
	}
	out := make([]string, 0, len(gpus))
	for _, g := range gpus {
		ids, _ := d.gpuDevices(g)
		if len(ids) == 0 {
			return nil, fmt.Errorf("GPU %q is not on this node (%d GPUs)", g, len(d.gpu.Devices()))
		}
		out = append(out, ids...)
	}
	return out, nil
}
