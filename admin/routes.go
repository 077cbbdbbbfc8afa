package admin

import "net/url"

// The admin listener's paths, for the server's routes and the client.
const (
	PathMetrics  = "/metrics"
	PathHealthz  = "/healthz"
	PathReadyz   = "/readyz"
	PathSpool    = "/v1/spool"
	PathRequests = "/v1/requests" // POST: the event API; GET PathRequests/{id}: a recent record
	PathPprof    = "/debug/pprof/"
)

// The admin listener's route patterns.
const (
	PatternMetrics = "GET " + PathMetrics
	PatternHealthz = "GET " + PathHealthz
	PatternReadyz  = "GET " + PathReadyz
	PatternSpool   = "GET " + PathSpool
	PatternEvents  = "POST " + PathRequests
	// PatternRequest is the route of GET /v1/requests/{id}. The id is the
	// rest of the path: request ids may hold '/' (X-Request-Id, the event
	// API), sent as they are or escaped (%2F).
	PatternRequest = "GET " + PathRequests + "/{id...}"
)

// RequestShowMax is the most records of one id that one answer of GET
// /v1/requests/{id} shows (and its default): each may carry an
// explanation, and a client that sends one X-Request-Id with every request
// may have attribution.audit_records of them kept. ?limit=N asks for fewer.
const RequestShowMax = 100

// RequestPath is the path of the record of id on the admin listener, with
// the id escaped as one segment (a '/' in it as %2F), so that the router
// never cleans it ("a//b", "a/../b").
func RequestPath(id string) (path, rawPath string) {
	return PathRequests + "/" + id, PathRequests + "/" + url.PathEscape(id)
}
