package admin

import (
	"net/http"
	"net/http/pprof"
)

// Pprof serves Go's profiler under /debug/pprof/ on the admin listener
// (loopback, behind admin.token_file when set), for diagnosing CPU or memory
// on a node: go tool pprof http://127.0.0.1:9464/debug/pprof/profile?seconds=30
type Pprof struct{}

// Register implements Registrar.
func (Pprof) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathPprof, pprof.Index)
	mux.HandleFunc("GET "+PathPprof+"cmdline", pprof.Cmdline)
	mux.HandleFunc("GET "+PathPprof+"profile", pprof.Profile)
	mux.HandleFunc("GET "+PathPprof+"symbol", pprof.Symbol)
	mux.HandleFunc("GET "+PathPprof+"trace", pprof.Trace)
}
