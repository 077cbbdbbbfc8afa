// Package apierror writes errors in the shape of the OpenAI API, which
// OpenAI-compatible clients and SDKs parse and show to their users:
//
//	{"error":{"message":"...","type":"...","param":"...","code":413}}
//
// param, the request field at fault, is present only when there is one.
package apierror

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Write answers with status and an OpenAI-shaped error body. Headers set on
// w before the call are kept.
func Write(w http.ResponseWriter, status int, typ, message string) {
	WriteParam(w, status, typ, "", message)
}

// WriteParam is Write naming the request field at fault in "param".
func WriteParam(w http.ResponseWriter, status int, typ, param, message string) {
	var body struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   string `json:"param,omitempty"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	body.Error.Message = message
	body.Error.Type = typ
	body.Error.Param = param
	body.Error.Code = status
	b, _ := json.Marshal(body) // cannot fail: strings and an int
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
