package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/deadlabour/deadlabour/config"
)

// Client asks a running daemon's admin listener, as the commands audit and
// report do.
type Client struct {
	Host  string // host:port to dial
	Token string // the bearer token of admin.token_file; "" for none
	HTTP  *http.Client
}

// NewClient is a client of the admin listener on listen (admin.listen, or
// a --admin flag): an empty or wildcard host is dialled as loopback.
func NewClient(listen, token string, hc *http.Client) (*Client, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return &Client{Host: net.JoinHostPort(host, port), Token: token, HTTP: hc}, nil
}

// ConfigToken is the admin listener's token from cfg, read as the daemon
// reads it; "" when none is configured.
func ConfigToken(cfg *config.Config) (string, error) {
	if cfg.Admin.TokenFile == "" {
		return "", nil
	}
	tok, err := ReadToken(cfg.Admin.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	return string(tok), nil
}

// URL is the address of path (rawPath: its escaped form, or "") with the
// query rawQuery on the admin listener.
func (c *Client) URL(path, rawPath, rawQuery string) url.URL {
	return url.URL{Scheme: "http", Host: c.Host, Path: path, RawPath: rawPath, RawQuery: rawQuery}
}

// maxErrorBody is the most of an answer's body read.
const maxErrorBody = 64 << 20

// Get asks for u with the bearer token. An answer other than 200 is a
// *StatusError (its body read and the response closed); the caller closes
// the body of a 200.
func (c *Client) Get(ctx context.Context, u url.URL) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return nil, err
	}
	return nil, &StatusError{Status: resp.Status, Body: body}
}

// StatusError is an answer other than 200.
type StatusError struct {
	Status string // e.g. "404 Not Found"
	Body   []byte
}

// Error is the status and the answer's error message, or its body.
func (e *StatusError) Error() string {
	var b ErrorBody
	if json.Unmarshal(e.Body, &b) == nil && b.Error != "" {
		return fmt.Sprintf("%s: %s", e.Status, b.Error)
	}
	return fmt.Sprintf("%s: %s", e.Status, strings.TrimSpace(string(e.Body)))
}
