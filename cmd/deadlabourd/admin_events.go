package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"

	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/apierror"
)

// minAdminToken is the shortest bearer token admin.token_file may hold.
const minAdminToken = 16

// newEvents makes the event API (POST /v1/requests), reporting to the span
// queue like the proxies.
func (d *daemon) newEvents(tenantSecret []byte) error {
	e, err := requests.NewEvents(requests.EventOptions{
		History: d.cfg.Attribution.History.D(), SettleDelay: d.cfg.Attribution.SettleDelay.D(),
		TenantSecret: tenantSecret, TenantRaw: d.cfg.Admin.EventTenantRaw,
		Devices: d.eventDevices, Now: nowFunc, Logger: d.log.With("component", "events"),
	}, d.queue)
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
func (d *daemon) restoreEventsEnded() {
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
func (d *daemon) saveEventsEnded() {
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
func (d *daemon) registerEvents(mux *http.ServeMux) {
	if d.events != nil {
		mux.Handle("POST /v1/requests", d.eventGate.wrap(d.events))
	}
}

// eventDevices maps an event's upstream and gpus to device ids: the gpus it
// names (indices or UUIDs of GPUs on this node), else the GPUs of the
// configured upstream of that name.
func (d *daemon) eventDevices(upstream string, gpus []string) ([]string, error) {
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
func (d *daemon) upstreamDevicesStrict(gpus []string) ([]string, error) {
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

// adminHandler is the admin router behind the bearer-token check when
// admin.token_file is set.
func (d *daemon) adminHandler() (http.Handler, error) {
	mux := d.adminMux()
	if d.cfg.Admin.TokenFile == "" {
		if host, _, err := net.SplitHostPort(d.cfg.Admin.Listen); err == nil && !isLoopback(host) {
			d.log.Warn("the admin API listens beyond loopback without a token: anyone who reaches it can post requests; set admin.token_file",
				"listen", d.cfg.Admin.Listen)
		}
		return mux, nil
	}
	token, err := readAdminToken(d.cfg.Admin.TokenFile)
	if err != nil {
		return nil, &config.Error{Problems: []config.Problem{{Key: "admin.token_file", Msg: err.Error()}}}
	}
	return bearerAuth(token, mux), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readAdminToken reads the admin bearer token: the file's content, less
// surrounding space.
func readAdminToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	token := bytes.TrimSpace(b)
	if len(token) < minAdminToken {
		return nil, fmt.Errorf("%s holds a token of %d bytes; want at least %d (e.g. openssl rand -hex 32)", path, len(token), minAdminToken)
	}
	if bytes.ContainsAny(token, " \t\r\n") {
		return nil, fmt.Errorf("%s: the token must be one word", path)
	}
	return token, nil
}

// configAdminToken is the admin listener's token from cfg, read as the daemon
// reads it; "" when none is configured. For the commands that ask a
// running daemon (audit, report).
func configAdminToken(cfg *config.Config) (string, error) {
	if cfg.Admin.TokenFile == "" {
		return "", nil
	}
	tok, err := readAdminToken(cfg.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	return string(tok), nil
}

// adminDialAddr is the address a command on this machine dials for an
// admin listener on listen: an empty or wildcard host is loopback.
func adminDialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// bearerAuth lets through requests that carry "Authorization: Bearer
// <token>", and the liveness and readiness probes, which carry nothing
// secret and are called by orchestrators without credentials.
func bearerAuth(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deadlabour admin"`)
			apierror.WriteParam(w, http.StatusUnauthorized, "authentication_error", "Authorization",
				"Authorization: want the bearer token of admin.token_file")
			return
		}
		next.ServeHTTP(w, r)
	})
}
