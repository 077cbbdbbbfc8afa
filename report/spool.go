package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/sink"
)

// SpoolSource totals the records waiting in the spool of cfg, for a node
// with no InfluxDB: read in place (sink.ReadSpool) when no daemon holds
// the spool, else from the running daemon (GET /v1/spool on its admin
// listener), which holds it locked.
func SpoolSource(cfg *config.Config) Source {
	return &lineProtocolSource{
		name: "the spool in " + cfg.Spool.Dir,
		open: func() (io.ReadCloser, error) {
			r := newLineReader(sink.ReadSpool(cfg.Spool.Dir))
			if _, err := r.Read(nil); errors.Is(err, sink.ErrSpoolBusy) {
				r.Close()
				return spoolFromDaemon(cfg, err)
			} else if err != nil && err != io.EOF {
				r.Close()
				return nil, err
			}
			return r, nil
		},
	}
}

// spoolFromDaemon asks the daemon holding the spool for its records.
func spoolFromDaemon(cfg *config.Config, busy error) (io.ReadCloser, error) {
	if cfg.Admin.Listen == "" {
		return nil, fmt.Errorf("%w, and admin.listen is empty: stop the daemon, or enable its admin listener", busy)
	}
	c, err := admin.NewClient(cfg.Admin.Listen, "", &http.Client{Timeout: 10 * time.Minute})
	if err != nil {
		return nil, err
	}
	if c.Token, err = admin.ConfigToken(cfg); err != nil {
		return nil, err
	}
	u := c.URL(admin.PathSpool, "", "") // every measurement: records, idle, GPU names
	resp, err := c.Get(context.Background(), u)
	var status *admin.StatusError
	switch {
	case errors.As(err, &status):
		return nil, fmt.Errorf("%w; asking the daemon: GET %s: %s", busy, u.String(), status.Status)
	case err != nil:
		return nil, fmt.Errorf("%w; asking the daemon: %w", busy, err)
	}
	return resp.Body, nil
}

// lineReader reads the lines of a sequence as text, one per line.
type lineReader struct {
	next func() (string, error, bool)
	stop func()
	buf  []byte // what is left of the current line, newline included
	done bool
	err  error
}

func newLineReader(seq iter.Seq2[string, error]) *lineReader {
	next, stop := iter.Pull2(seq)
	return &lineReader{next: next, stop: stop}
}

func (r *lineReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, cmp.Or(r.err, io.EOF)
		}
		switch line, err, ok := r.next(); {
		case err != nil:
			r.done, r.err = true, err
		case !ok:
			r.done = true
		default:
			r.buf = append(append(r.buf[:0], line...), '\n')
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *lineReader) Close() error {
	r.stop()
	return nil
}
