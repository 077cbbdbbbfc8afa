package main

import (
	"net/http"
	"net/http/pprof"
)

// debugRoutes serves Go's profiler under /debug/pprof/ on the admin listener
// (loopback, behind admin.token_file when set), for diagnosing CPU or memory
// on a node: go tool pprof http://127.0.0.1:9464/debug/pprof/profile?seconds=30
func (d *daemon) debugRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
