package discover

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

func TestModels(t *testing.T) {
	ctx := context.Background()
	openai := httptest.NewServer(fakeupstream.New(fakeupstream.Options{Models: []string{"a/b", "c", "a/b"}}))
	defer openai.Close()
	ollama := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != PathOllama {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"},{"model":"qwen2.5:7b"}]}`))
	}))
	defer ollama.Close()
	neither := httptest.NewServer(http.NotFoundHandler())
	defer neither.Close()

	names, path, err := Models(ctx, http.DefaultClient, openai.URL+"/")
	if err != nil || path != PathOpenAI || !slices.Equal(names, []string{"a/b", "c"}) {
		t.Errorf("OpenAI: %v %s %v", names, path, err)
	}
	names, path, err = Models(ctx, http.DefaultClient, ollama.URL)
	if err != nil || path != PathOllama || !slices.Equal(names, []string{"llama3.2:latest", "qwen2.5:7b"}) {
		t.Errorf("Ollama: %v %s %v", names, path, err)
	}
	if _, _, err = Models(ctx, http.DefaultClient, neither.URL); !errors.Is(err, ErrNoList) || !strings.Contains(err.Error(), "GET /api/tags: answered 404") {
		t.Errorf("neither: %v", err)
	}
	if status, err := Reach(ctx, http.DefaultClient, neither.URL); err != nil || status != 404 {
		t.Errorf("Reach: %d %v", status, err)
	}
	dead := deadURL(t)
	if _, _, err = Models(ctx, http.DefaultClient, dead); err == nil || errors.Is(err, ErrNoList) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dead port: %v", err)
	}
}

func TestInflux(t *testing.T) {
	ctx := context.Background()
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Influxdb-Version", "v2.7.1")
		w.Write([]byte(`{"status":"pass"}`))
	}))
	defer influx.Close()
	if what, err := Influx(ctx, http.DefaultClient, influx.URL); err != nil || what != "GET /health: 200, InfluxDB v2.7.1" {
		t.Errorf("Influx: %q %v", what, err)
	}
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if _, err := Influx(ctx, http.DefaultClient, other.URL); err == nil || !strings.Contains(err.Error(), "GET /ping: 404") {
		t.Errorf("not InfluxDB: %v", err)
	}
	if _, err := Influx(ctx, http.DefaultClient, deadURL(t)); err == nil {
		t.Error("a dead port answered")
	}
}

// deadURL is a loopback URL nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}
