package admin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/apierror"
)

// Registrar is a feature that serves routes on the admin listener.
type Registrar interface {
	Register(mux *http.ServeMux)
}

// RegistrarFunc is a function that registers routes.
type RegistrarFunc func(mux *http.ServeMux)

// Register implements Registrar.
func (f RegistrarFunc) Register(mux *http.ServeMux) { f(mux) }

// Handler is the admin router: every registrar's routes, behind the
// bearer-token check when tokenFile (admin.token_file) is set. Without a
// token, listening beyond loopback is refused (config.Validate says so
// first).
func Handler(listen, tokenFile string, log *slog.Logger, regs ...Registrar) (http.Handler, error) {
	mux := http.NewServeMux()
	for _, r := range regs {
		r.Register(mux)
	}
	if tokenFile == "" {
		if host, _, err := net.SplitHostPort(listen); err == nil && !isLoopback(host) {
			return nil, &config.Error{Problems: []config.Problem{{Key: "admin.listen",
				Msg: fmt.Sprintf("%q listens beyond loopback without admin.token_file: set one", listen)}}}
		}
		return mux, nil
	}
	token, err := ReadToken(tokenFile)
	if err != nil {
		return nil, &config.Error{Problems: []config.Problem{{Key: "admin.token_file", Msg: err.Error()}}}
	}
	return bearerAuth(token, mux), nil
}

// Server is the admin listener: opened at start (Listen), so that a port
// in use is an error then, not a log line later; it serves once Run runs.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen opens the admin listener on addr.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{ln: ln}, nil
}

// Handle sets what the listener serves.
func (s *Server) Handle(h http.Handler) {
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Close; its error is the listener's failure, nil after
// Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops serving (requests in flight are cut) and closes the listener.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
	s.ln.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ReadToken reads the admin bearer token: the file's content, less
// surrounding space (config.ReadToken: one word of 16 bytes or more).
func ReadToken(path string) ([]byte, error) { return config.ReadToken(path) }

// bearerAuth lets through requests that carry "Authorization: Bearer
// <token>", and the liveness and readiness probes, which carry nothing
// secret and are called by orchestrators without credentials.
func bearerAuth(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == PathHealthz || r.URL.Path == PathReadyz {
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
