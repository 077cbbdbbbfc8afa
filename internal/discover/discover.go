// Package discover asks the servers a node's config names what they are:
// which models an inference server lists (OpenAI's GET /v1/models, else
// Ollama's GET /api/tags), and whether InfluxDB answers. `deadlabourd
// init` writes a config from the answers, `check-config --online` prints
// them, and the daemon tags records with the models an upstream lists.
package discover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBody bounds what is read of an answer: a model list of thousands of
// names fits many times over.
const maxBody = 4 << 20

// Paths the model lists are asked at, in order.
const (
	PathOpenAI = "/v1/models"
	PathOllama = "/api/tags"
)

// ErrNoList is a server that answered but listed no models at either path.
var ErrNoList = errors.New("lists no models")

// Models asks the inference server at target (its base URL, as
// upstreams[].target) which models it serves: GET /v1/models (OpenAI:
// {"data":[{"id":...}]}), else GET /api/tags (Ollama:
// {"models":[{"name":...}]}). It returns the names in the server's order,
// without duplicates or empty ones, and the path that listed them. A server
// that answers neither with a list gives an error wrapping ErrNoList; one
// that cannot be reached, the transport's error.
func Models(ctx context.Context, client *http.Client, target string) (names []string, path string, err error) {
	var why []string
	for _, path := range []string{PathOpenAI, PathOllama} {
		names, err := list(ctx, client, join(target, path), path)
		if err == nil {
			return names, path, nil
		}
		var he *httpError
		if !errors.As(err, &he) {
			return nil, "", err // not reached at all: the next path will not be either
		}
		why = append(why, fmt.Sprintf("GET %s: %v", path, err))
	}
	return nil, "", fmt.Errorf("%w (%s)", ErrNoList, strings.Join(why, "; "))
}

// httpError is an answer that was not a model list.
type httpError struct{ msg string }

func (e *httpError) Error() string { return e.msg }

func list(ctx context.Context, client *http.Client, url, path string) ([]string, error) {
	body, status, err := get(ctx, client, url)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &httpError{fmt.Sprintf("answered %d %s", status, http.StatusText(status))}
	}
	var doc struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		Models []struct {
			Name  string `json:"name"`
			Model string `json:"model"`
		} `json:"models"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, &httpError{fmt.Sprintf("not a model list: %v", err)}
	}
	var names []string
	if path == PathOpenAI {
		if doc.Data == nil {
			return nil, &httpError{`not a model list: no "data"`}
		}
		for _, m := range doc.Data {
			names = append(names, m.ID)
		}
	} else {
		if doc.Models == nil {
			return nil, &httpError{`not a model list: no "models"`}
		}
		for _, m := range doc.Models {
			names = append(names, cmpOr(m.Name, m.Model))
		}
	}
	seen := map[string]bool{"": true}
	out := names[:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Reach asks target for "/" and returns the status it answered: any HTTP
// answer means the server is there.
func Reach(ctx context.Context, client *http.Client, target string) (int, error) {
	_, status, err := get(ctx, client, join(target, "/"))
	return status, err
}

// Influx asks InfluxDB at base whether it is up: GET /ping (1.x, 2.x,
// 3.x), else GET /health (2.x). It returns what answered, e.g. "GET /ping:
// 204, InfluxDB 1.8.3"; an error when neither path answers 2xx.
func Influx(ctx context.Context, client *http.Client, base string) (string, error) {
	var why []string
	for _, path := range []string{"/ping", "/health"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, join(base, path), nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			what := fmt.Sprintf("GET %s: %d", path, resp.StatusCode)
			if v := resp.Header.Get("X-Influxdb-Version"); v != "" {
				what += ", InfluxDB " + v
			}
			return what, nil
		}
		why = append(why, fmt.Sprintf("GET %s: %d %s", path, resp.StatusCode, http.StatusText(resp.StatusCode)))
	}
	return "", fmt.Errorf("not an InfluxDB that is up (%s)", strings.Join(why, "; "))
}

func get(ctx context.Context, client *http.Client, url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	return body, resp.StatusCode, nil
}

// join appends path to base, a URL that may end in "/" or a path prefix.
func join(base, path string) string {
	return strings.TrimSuffix(base, "/") + path
}

// UpstreamClient is a client that reaches inference servers as the
// metering proxy does: directly, never through an HTTP_PROXY from the
// environment, each exchange bounded by timeout.
func UpstreamClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return &http.Client{Timeout: timeout, Transport: t}
}
