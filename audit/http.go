package audit

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// Register serves GET /v1/requests/{id} on the admin listener. A nil
// store registers it too: it answers that the audit store is off.
func (s *Store) Register(mux *http.ServeMux) {
	mux.HandleFunc(admin.PatternRequest, s.serveRequest)
}

// serveRequest answers GET /v1/requests/{id}: the record as written to
// InfluxDB (tags, fields, time), and with ?explain=1 how it was made. Of
// several records of the id, the newest ?limit (at most admin.RequestShowMax).
func (s *Store) serveRequest(w http.ResponseWriter, r *http.Request) {
	if s == nil {
		admin.WriteJSON(w, http.StatusNotFound, admin.ErrorBody{Error: "the audit store is off (attribution.audit_records: 0)"})
		return
	}
	limit := admin.RequestShowMax
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > admin.RequestShowMax {
			admin.WriteJSON(w, http.StatusBadRequest, admin.ErrorBody{Error: fmt.Sprintf(
				"limit=%q: want a whole number of records from 1 to %d", v, admin.RequestShowMax)})
			return
		}
		limit = n
	}
	id := r.PathValue("id")
	kept, total := s.lookup(id, limit)
	if len(kept) == 0 {
		admin.WriteJSON(w, http.StatusNotFound, admin.ErrorBody{Error: fmt.Sprintf(
			"request %q is not among the %d most recent records kept (attribution.audit_records); InfluxDB has every record", id, s.maxRecords)})
		return
	}
	explain := r.URL.Query().Get("explain")
	withExplain := explain != "" && explain != "0" && explain != "false"
	answers := make([]admin.RecordAnswer, len(kept))
	for i, k := range kept {
		out, err := s.recordJSON(k.rec)
		if err != nil {
			admin.WriteJSON(w, http.StatusInternalServerError, admin.ErrorBody{Error: err.Error()})
			return
		}
		answers[i] = admin.RecordAnswer{Record: out}
		if withExplain {
			ex := s.explain(k.rec, k.settled)
			answers[i].Explain = &ex
		}
	}
	if total == 1 {
		answers[0].SameIDRecords = 1
		admin.WriteJSON(w, http.StatusOK, answers[0])
		return
	}
	// Several records share the id: those shown, never one in their name.
	note := sameIDNote
	if len(answers) < total {
		note += fmt.Sprintf("; the newest %d of the %d kept are shown (?limit=, at most %d)", len(answers), total, admin.RequestShowMax)
	}
	admin.WriteJSON(w, http.StatusOK, admin.SameIDAnswer{RequestID: id, SameIDRecords: total, RecordsShown: len(answers),
		Note: note, Records: answers})
}

// sameIDNote is the note of an answer listing several records of one id.
const sameIDNote = "several records share this request id (two requests sent with the same X-Request-Id, " +
	"or an event-API request recorded again after a restart): each is a separate record in InfluxDB, listed oldest first; " +
	"their time (the InfluxDB point's timestamp) tells them apart"

// recordJSON is a record as the InfluxDB point has it, in schema order.
func (s *Store) recordJSON(r estimator.Record) (admin.OrderedJSON, error) {
	p, err := s.schema.Point(r)
	if err != nil {
		return nil, err
	}
	out := admin.OrderedJSON{{Key: "measurement", Value: p.Measurement}, {Key: "time", Value: p.Time.UTC().Format(time.RFC3339Nano)}}
	for _, t := range p.Tags {
		out = append(out, schema.Field{Key: t.Key, Value: t.Value})
	}
	return append(out, p.Fields...), nil
}
