package requests

import (
	"bytes"
	"io"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
)

// usageFilter edits an SSE stream for which the proxy added
// stream_options.include_usage, so that the client sees the stream it would
// have seen without the proxy:
//
//   - the usage-only chunk (choices empty, usage set) is removed, with its
//     blank line, when it holds nothing but its usage and what every chunk
//     repeats; when it holds more (llama-server moves its timings onto it),
//     only its usage member is removed (dialect.UsageChunkEvent): what the
//     proxy strips never takes anything else the server sent;
//   - a top-level "usage":null member, which OpenAI-style servers add to
//     every chunk of a stream that asked for usage, is removed from the
//     chunk with the comma that separated it.
//
// It releases the stream event by event: an event's bytes wait until its
// blank line arrives, which servers write with the event itself. An event
// longer than the watcher's limit ends the editing: from there on the stream
// passes as it comes (memory stays bounded; no server sends such events).
type usageFilter struct {
	limit   int
	buf     []byte // read buffer
	pending []byte // read, not yet released: an unfinished event
	scan    int    // pending[:scan] is scanned: no event ends in it
	line    int    // start of the line being scanned
	out     []byte // released, not yet read by the client
	off     int
	passing bool   // editing gave up: pass everything
	err     error  // how the upstream read ended, returned once out is drained
	later   []byte // events released unedited and not yet watched
}

// settle shows the watcher the events released and not yet watched.
func (f *usageFilter) settle(w *bodyWatcher) {
	if len(f.later) > 0 {
		w.write(f.later)
		f.later = f.later[:0]
	}
}

func newUsageFilter(limit int) *usageFilter { return &usageFilter{limit: limit} }

func (f *usageFilter) read(b *watchedBody, p []byte) (int, error) {
	for {
		if f.off < len(f.out) {
			n := copy(p, f.out[f.off:])
			f.off += n
			return n, nil
		}
		f.out, f.off = f.out[:0], 0
		if f.err != nil {
			return 0, f.err
		}
		if f.buf == nil {
			f.buf = make([]byte, 4<<10)
		}
		f.settle(b.watch)
		n, err := b.ReadCloser.Read(f.buf)
		if f.passing {
			f.out = append(f.out, f.buf[:n]...)
			b.watch.write(f.buf[:n])
		} else {
			f.pending = append(f.pending, f.buf[:n]...)
			f.events(b.watch)
		}
		if err != nil {
			if !f.passing && len(f.pending) > 0 {
				f.event(b.watch, f.pending, true) // the last event, without its blank line
				f.pending = f.pending[:0]
			}
			f.err = err
			b.saw(nil, err)
		}
	}
}

// events releases the events that are complete in pending.
func (f *usageFilter) events(w *bodyWatcher) {
	for {
		end := f.eventEnd()
		if end < 0 {
			break
		}
		f.event(w, f.pending[:end], false)
		rest := copy(f.pending, f.pending[end:])
		f.pending = f.pending[:rest]
		f.scan, f.line = 0, 0
	}
	if len(f.pending) > f.limit {
		f.passing = true
		f.out = append(f.out, f.pending...)
		f.settle(w)
		w.write(f.pending)
		f.pending = nil
	}
}

// eventEnd is the index after the blank line that ends the first event in
// pending, or -1 when it has not come yet.
func (f *usageFilter) eventEnd() int {
	b := f.pending
	for i := f.scan; i < len(b); i++ {
		c := b[i]
		if c != '\n' && c != '\r' {
			continue
		}
		next := i + 1
		if c == '\r' {
			if i+1 == len(b) {
				f.scan = i // CR or CRLF? wait for the next byte
				return -1
			}
			if b[i+1] == '\n' {
				next = i + 2
			}
		}
		if i == f.line {
			return next // an empty line: the event ends here
		}
		f.line = next
		i = next - 1
	}
	f.scan = len(b)
	return -1
}

// event shows the watcher one event's raw bytes and releases them, edited. An event
// without a "usage" key cannot need an edit: it is released at once and
// watched at the next read, off the event's way to the client.
func (f *usageFilter) event(w *bodyWatcher, raw []byte, last bool) {
	if !last && !bytes.Contains(raw, []byte(`"usage"`)) {
		f.out = append(f.out, raw...)
		f.later = append(f.later, raw...)
		return
	}
	f.settle(w)
	w.last = eventInfo{}
	w.write(raw)
	if last {
		w.close()
	}
	switch {
	case w.last.usageOnly:
		if from, to, whole := dialect.UsageChunkEvent(raw); !whole {
			f.out = append(append(f.out, raw[:from]...), raw[to:]...)
		}
		return
	case w.last.data:
		if from, to, ok := dialect.NullUsageEvent(raw); ok {
			f.out = append(append(f.out, raw[:from]...), raw[to:]...)
			return
		}
	}
	f.out = append(f.out, raw...)
}

var _ io.Reader = (*watchedBody)(nil)
