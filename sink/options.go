package sink

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/deadlabour/deadlabour/internal/redact"
)

// Options configure a Writer. Zero durations and sizes take the defaults.
type Options struct {
	// Dir is the spool directory (required): every point is committed
	// there before it is sent, and stays until InfluxDB acknowledged it.
	Dir string
	// MaxBytes bounds the spool (default 1 GiB). When full, the oldest
	// telemetry is dropped first, then new telemetry, then new records;
	// every drop is counted and logged.
	MaxBytes int64
	// FsyncInterval is the group commit: points enqueued are written and
	// fsynced together at most this long after Enqueue (default 200 ms).
	FsyncInterval time.Duration

	// URL is InfluxDB's base URL, e.g. http://127.0.0.1:8086. Empty: no
	// InfluxDB, the spool only keeps (what ReadSpool and `report` read).
	URL string
	// Bucket is "database/retention-policy" on InfluxDB 1.8, e.g.
	// "deadlabour/autogen"; a bucket name on 2.x.
	Bucket string
	// Org is empty on InfluxDB 1.8.
	Org string
	// Token is "user:password" on InfluxDB 1.8 with auth, empty without.
	// The caller reads it from the environment or a file.
	Token string
	// BatchSize and BatchBytes bound one write request, in points and in
	// bytes of line protocol before gzip (defaults 1000 and 4 MiB).
	// BatchBytes is at most an eighth of MaxBytes: the batch in flight is
	// never dropped to make room, so it must leave room to drop.
	BatchSize  int
	BatchBytes int64
	// FlushInterval is the longest a point waits for its batch to fill
	// (default 1 s).
	FlushInterval time.Duration
	// Timeout bounds each write request (default 5 s).
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait after a failed write: it
	// doubles from BackoffMin up to BackoffMax with jitter (defaults 100 ms
	// and 30 s), or follows the server's Retry-After up to BackoffMax.
	// A refused token or a missing bucket waits BackoffMax each time.
	BackoffMin, BackoffMax time.Duration
	// DeadLetterMaxBytes bounds the dead-letter file (default 64 MiB);
	// refused lines beyond it are dropped and counted.
	DeadLetterMaxBytes int64
	// NoGzip sends write bodies uncompressed (default: gzip). The client
	// streams gzip bodies without a length, and InfluxDB 1.8 enforces its
	// max-body-size only on bodies whose length it is told.
	NoGzip bool

	// Now is the clock stamping enqueue times (default time.Now).
	Now func() time.Time

	// fileLimit, for tests, bounds the spool file's size (bbolt's MaxSize):
	// a commit that would grow it further fails as on a full disk.
	fileLimit int64
	// spellQuiet, for tests, is how long a spool state must stay away for
	// it to end (default defaultSpellQuiet).
	spellQuiet time.Duration
}

// Defaults of Options.
const (
	DefaultMaxBytes           = 1 << 30
	DefaultFsyncInterval      = 200 * time.Millisecond
	DefaultBatchSize          = 1000
	DefaultBatchBytes         = 4 << 20
	DefaultFlushInterval      = time.Second
	DefaultTimeout            = 5 * time.Second
	DefaultBackoffMin         = 100 * time.Millisecond
	DefaultBackoffMax         = 30 * time.Second
	DefaultDeadLetterMaxBytes = 64 << 20

	// maxBacklog bounds the points enqueued but not yet committed (the
	// disk failing or far too slow); beyond it points are dropped.
	maxBacklog = 64 << 20
)

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Dir == "":
		return o, errors.New("sink: Options.Dir is empty: the spool needs a directory")
	case o.URL != "":
		u, err := url.Parse(o.URL)
		switch {
		case err != nil:
			// url's errors quote the URL, password and all.
			return o, fmt.Errorf("sink: Options.URL %q: does not parse as a URL", redact.URL(o.URL))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			return o, fmt.Errorf("sink: Options.URL %q: want http:// or https:// and a host", redact.URL(o.URL))
		case o.Bucket == "":
			return o, errors.New(`sink: Options.Bucket is empty: want "database/retention-policy" on InfluxDB 1.8`)
		}
	}
	for _, c := range []struct {
		name string
		bad  bool
	}{
		{"MaxBytes", o.MaxBytes < 0},
		{"FsyncInterval", o.FsyncInterval < 0},
		{"BatchSize", o.BatchSize < 0},
		{"BatchBytes", o.BatchBytes < 0},
		{"FlushInterval", o.FlushInterval < 0},
		{"Timeout", o.Timeout < 0},
		{"BackoffMin", o.BackoffMin < 0},
		{"BackoffMax", o.BackoffMax < 0},
		{"DeadLetterMaxBytes", o.DeadLetterMaxBytes < 0},
	} {
		if c.bad {
			return o, fmt.Errorf("sink: Options.%s is negative", c.name)
		}
	}
	setDefault(&o.MaxBytes, DefaultMaxBytes)
	setDefault(&o.FsyncInterval, DefaultFsyncInterval)
	setDefault(&o.BatchSize, DefaultBatchSize)
	setDefault(&o.BatchBytes, DefaultBatchBytes)
	setDefault(&o.FlushInterval, DefaultFlushInterval)
	setDefault(&o.Timeout, DefaultTimeout)
	setDefault(&o.BackoffMin, DefaultBackoffMin)
	setDefault(&o.BackoffMax, DefaultBackoffMax)
	setDefault(&o.DeadLetterMaxBytes, DefaultDeadLetterMaxBytes)
	o.BatchBytes = min(o.BatchBytes, o.MaxBytes/8)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BackoffMin > o.BackoffMax {
		return o, fmt.Errorf("sink: Options.BackoffMin %v is more than BackoffMax %v", o.BackoffMin, o.BackoffMax)
	}
	return o, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
