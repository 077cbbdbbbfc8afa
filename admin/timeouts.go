package admin

import "net/http"

// Configure lets the daemon set the listener's timeouts and error log on
// the http.Server Handle made, before Serve.
func (s *Server) Configure(f func(*http.Server)) {
	if s.srv != nil {
		f(s.srv)
	}
}
