package main

import (
	"encoding/json"
	"net/http"

	"github.com/deadlabour/deadlabour/collector/gpu"
)

// adminMux is the admin listener's router (loopback by default). Each
// feature registers its routes from its own file.
func (d *daemon) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	d.requestRoutes(mux)
	d.obs.routes(mux) // GET /metrics, /healthz, /readyz, /v1/spool (observe.go)
	d.registerEvents(mux)
	d.debugRoutes(mux) // GET /debug/pprof/ (admin_debug.go)
	return mux
}

func (d *daemon) gpuCount() int {
	if d.gpu == nil {
		return 0
	}
	return len(d.gpu.Devices())
}

// gpuHealth is every GPU's health (healthy, or why not and since when).
func (d *daemon) gpuHealth() []gpu.DeviceHealth {
	if d.gpu == nil {
		return []gpu.DeviceHealth{}
	}
	return d.gpu.Health()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
