package fakeupstream

// GET /v1/models, error bodies and JSON encoding.

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/deadlabour/deadlabour/internal/apierror"
)

func (s *Server) models(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range s.opts.Models {
		list.Data = append(list.Data, model{ID: m, Object: "model", Created: s.opts.Created, OwnedBy: "fakeupstream"})
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(mustJSON(list))
}

// writeError answers with an OpenAI-shaped error.
func writeError(w http.ResponseWriter, status int, message string) {
	apierror.Write(w, status, "invalid_request_error", message)
}

// mustJSON marshals values built here, which cannot fail to marshal.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fakeupstream: marshal %T: %v", v, err))
	}
	return b
}
