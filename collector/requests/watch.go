package requests

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
)

// framing is how a response body is cut into JSON documents.
type framing int

const (
	framingNone   framing = iota // not read: another type
	framingJSON                  // one JSON document
	framingSSE                   // text/event-stream, one document per event
	framingNDJSON                // application/x-ndjson (Ollama), one document per line
)

// framingOf tells how to read a response from its Content-Type.
func framingOf(h http.Header) framing {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch mt {
	case "text/event-stream":
		return framingSSE
	case "application/json":
		return framingJSON
	case "application/x-ndjson", "application/jsonl", "application/json-lines":
		return framingNDJSON
	}
	return framingNone
}

// Content codings the watcher decodes on the side (the client still gets the
// body as the upstream encoded it). Any other coding leaves usage unknown.
const (
	codingIdentity = ""
	codingGzip     = "gzip"
	codingDeflate  = "deflate"
)

// codingOf is the response's content coding, lower case; "" for identity.
func codingOf(h http.Header) string {
	ce := strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding")))
	switch ce {
	case "", "identity":
		return codingIdentity
	case "x-gzip":
		return codingGzip
	}
	return ce
}

// eventInfo is what the watcher saw in the last event it was shown (filter).
type eventInfo struct {
	data      bool // the event had data
	usageOnly bool // it was an OpenAI usage-only chunk
}

// bodyWatcher reads a response as it passes and keeps what it says about usage
// and timing. It holds at most about twice limit bytes at any time.
type bodyWatcher struct {
	dialect *dialect.Dialect
	framing framing
	limit   int
	now     func() time.Time

	lines lineSplitter
	sse   sseEvent
	body  []byte // JSON: the body so far, or its tail once over limit
	over  bool   // JSON: the body was larger than limit
	dec   *decoder

	usage      dialect.Usage
	hasUsage   bool
	firstToken time.Time
	tokens     int64 // generated tokens counted from the stream
	text       int64 // bytes of generated text in a whole body; -1 when it could not be read
	done       bool  // the stream said it was complete ([DONE], done:true, stop:true)
	failed     bool  // an error object came in the body
	last       eventInfo
	closed     bool
}

func newBodyWatcher(d *dialect.Dialect, f framing, limit int, now func() time.Time) *bodyWatcher {
	w := &bodyWatcher{dialect: d, framing: f, limit: limit, now: now, usage: dialect.NoUsage, text: -1}
	w.lines.limit = limit
	return w
}

// headerUsage records counts read from the response headers; the body's
// own counts, where it has them, win over them.
func (w *bodyWatcher) headerUsage(u dialect.Usage) {
	w.usage.Merge(u)
	w.hasUsage = true
}

// decode makes the watcher read the body through a decoder of coding (gzip or
// deflate) on its own goroutine; close waits for it.
func (w *bodyWatcher) decode(coding string) {
	w.dec = startDecoder(coding, w.feed)
}

// write shows the watcher the next bytes of the body.
func (w *bodyWatcher) write(p []byte) {
	if w.closed {
		return
	}
	if w.dec != nil {
		w.dec.write(p)
		return
	}
	w.feed(p)
}

// feed reads decoded bytes of the body.
func (w *bodyWatcher) feed(p []byte) {
	switch w.framing {
	case framingSSE:
		w.lines.write(p, w.sseLine)
	case framingNDJSON:
		w.lines.write(p, w.ndjsonLine)
	case framingJSON:
		w.body = append(w.body, p...)
		if len(w.body) > w.limit {
			w.over = true
			if len(w.body) > 2*w.limit { // keep the tail, copying seldom
				w.body = append(w.body[:0], w.body[len(w.body)-w.limit:]...)
			}
		}
	}
}

// close ends the body: at its end, or where it was cut short. Calling it
// again does nothing.
func (w *bodyWatcher) close() {
	if w.closed {
		return
	}
	w.closed = true
	if w.dec != nil {
		w.dec.close()
	}
	w.finish()
}

func (w *bodyWatcher) finish() {
	switch w.framing {
	case framingSSE:
		w.lines.close(w.sseLine)
		w.dispatch()
		w.sse.data = nil
	case framingNDJSON:
		w.lines.close(w.ndjsonLine)
	case framingJSON:
		if !w.over {
			w.document(w.body)
		} else if u, ok := w.dialect.TailUsage(w.body[len(w.body)-w.limit:]); ok {
			w.usage.Merge(u)
			w.hasUsage = true
		}
		w.body = nil
	}
}

// document reads one JSON document: a whole body, one event's data or one
// line. The last usage block seen wins: servers that report usage on every
// chunk report it cumulatively, so summing would count tokens twice.
func (w *bodyWatcher) document(b []byte) {
	if w.done {
		return // nothing after the end counts
	}
	if w.framing == framingSSE && bytes.Equal(b, []byte("[DONE]")) {
		w.done = true
		return
	}
	d := w.dialect.Document(b)
	if d.HasUsage {
		w.usage.Merge(d.Usage)
		w.hasUsage = true
	}
	w.failed = w.failed || d.Failed
	w.last.usageOnly = d.UsageOnly
	if w.framing == framingJSON {
		if len(b) > 0 && (d.HasUsage || d.Text > 0 || json.Valid(b)) {
			w.text = d.Text
		}
		return // a whole body says nothing about when its first token came
	}
	if d.Tokens > 0 {
		w.tokens += d.Tokens
		if w.firstToken.IsZero() {
			w.firstToken = w.now()
		}
	}
	if d.Final {
		w.done = true
	}
}

// ndjsonLine reads one line of an NDJSON stream.
func (w *bodyWatcher) ndjsonLine(line []byte) {
	if line = bytes.TrimSpace(line); len(line) > 0 {
		w.last.data = true
		w.document(line)
	}
}

// sseEvent is the event an SSE stream is in the middle of: the lines
// "data: ..." joined by "\n". Comments (keep-alives) and fields other than
// data are skipped. An event's data longer than limit is dropped whole.
type sseEvent struct {
	data    []byte
	dropped bool // the event's data is over limit
}

func (w *bodyWatcher) sseLine(line []byte) {
	if len(line) == 0 {
		w.dispatch()
		return
	}
	e := &w.sse
	field, value, _ := bytes.Cut(line, []byte(":"))
	if !bytes.Equal(field, []byte("data")) || e.dropped {
		return // a comment (empty field), event:, id:, retry:
	}
	value = bytes.TrimPrefix(value, []byte(" "))
	extra := len(value)
	if len(e.data) > 0 {
		extra++
	}
	if len(e.data)+extra > w.limit {
		e.dropped = true
		return
	}
	if len(e.data) > 0 {
		e.data = append(e.data, '\n')
	}
	e.data = append(e.data, value...)
}

func (w *bodyWatcher) dispatch() {
	e := &w.sse
	if len(e.data) > 0 && !e.dropped {
		w.last.data = true
		w.document(e.data)
	}
	e.data = e.data[:0]
	e.dropped = false
}

// lineSplitter cuts a byte stream into lines ending in LF, CRLF or a lone
// CR (all three end a line in SSE). A line longer than limit is dropped
// whole, so memory stays bounded whatever the upstream sends.
type lineSplitter struct {
	limit  int
	line   []byte // an unfinished line carried over from the last write
	long   bool   // the current line is over limit: skip to its end
	skipLF bool   // the last write ended in CR: a LF starting the next one belongs to it
}

func (s *lineSplitter) write(b []byte, onLine func([]byte)) {
	if s.skipLF && len(b) > 0 {
		s.skipLF = false
		if b[0] == '\n' {
			b = b[1:]
		}
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		head := b
		if i >= 0 {
			head = b[:i]
		}
		next := i + 1
		if j := bytes.IndexByte(head, '\r'); j >= 0 {
			i, next = j, j+1
			switch {
			case j+1 < len(b) && b[j+1] == '\n':
				next = j + 2
			case j+1 == len(b):
				s.skipLF = true
			}
		}
		if i < 0 {
			s.carry(b)
			return
		}
		part := b[:i]
		b = b[next:]
		switch {
		case s.long:
			s.long = false
		case len(s.line)+len(part) > s.limit:
			// too long: dropped
		case len(s.line) > 0:
			s.line = append(s.line, part...)
			onLine(s.line)
		default:
			onLine(part)
		}
		s.line = s.line[:0]
	}
}

// carry keeps the start of a line that the next write will finish.
func (s *lineSplitter) carry(b []byte) {
	if s.long {
		return
	}
	if len(s.line)+len(b) > s.limit {
		s.long = true
		s.line = s.line[:0]
		return
	}
	s.line = append(s.line, b...)
}

// close ends the stream: a last line with no line end still counts.
func (s *lineSplitter) close(onLine func([]byte)) {
	if len(s.line) > 0 && !s.long {
		onLine(s.line)
	}
	s.line, s.long, s.skipLF = nil, false, false
}

// decoder decompresses a copy of the body on its own goroutine, for a watcher
// that must read a gzip or deflate body the client gets as it is.
type decoder struct {
	pw   *io.PipeWriter
	done chan struct{}
	once sync.Once
}

func startDecoder(coding string, feed func([]byte)) *decoder {
	pr, pw := io.Pipe()
	d := &decoder{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		// Whatever happens, read the pipe to its end: a write must never
		// block the response on a decoder that gave up.
		defer io.Copy(io.Discard, pr)
		var r io.Reader
		var err error
		switch coding {
		case codingGzip:
			r, err = gzip.NewReader(pr)
		case codingDeflate:
			r, err = zlib.NewReader(pr)
		}
		if err != nil {
			return
		}
		buf := make([]byte, 16<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				feed(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return d
}

func (d *decoder) write(p []byte) { _, _ = d.pw.Write(p) }

// close ends the compressed stream and waits for the decoder.
func (d *decoder) close() {
	d.once.Do(func() {
		d.pw.Close()
		<-d.done
	})
}

// watchedBody is an upstream response body that shows every byte it passes
// to a bodyWatcher, and remembers how reading it ended. With a filter it also
// edits the stream (see usageFilter).
//
// Bytes are watched after they are handed on, at the next Read: parsing
// them never delays an event on its way to the client. The proxy's end of
// the request shows the watcher what is left (see settle).
type watchedBody struct {
	io.ReadCloser
	watch   *bodyWatcher
	filter  *usageFilter
	pending []byte // handed on, not yet watched (a copy: the caller reuses its buffer)
	eof     bool   // read to the end
	err     error  // the first read error, other than io.EOF
	// ended: the stream's end marker ([DONE], done:true, ...) went to the
	// client: the answer was whole, whatever the client did next.
	ended bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.delivered()
	if b.filter != nil {
		return b.filter.read(b, p)
	}
	b.settle()
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.saw(p[:n], err)
		return n, err
	}
	b.pending = append(b.pending, p[:n]...)
	return n, err
}

// delivered notes, at a Read, whether the end marker has gone to the
// client. ReverseProxy reads again only once it has written what the last
// Read gave (it stops at a failed write), so everything handed on before
// went to the client's connection: with a filter, once all it released is
// handed on. An SDK that hangs up as soon as it reads [DONE], before the
// upstream's chunked terminator has come, leaves the proxy in this next Read
// when its context ends. A body watched through a decoder (gzip) is read on
// the decoder's goroutine and is judged by its end alone.
func (b *watchedBody) delivered() {
	if b.ended || b.watch.dec != nil || (b.filter != nil && b.filter.off < len(b.filter.out)) {
		return
	}
	b.settle()
	b.ended = b.watch.done
}

// settle shows the watcher the bytes handed on and not yet watched.
func (b *watchedBody) settle() {
	if len(b.pending) > 0 {
		b.watch.write(b.pending)
		b.pending = b.pending[:0]
	}
	if b.filter != nil {
		b.filter.settle(b.watch)
	}
}

// saw shows the watcher the bytes read and notes how the read ended.
func (b *watchedBody) saw(p []byte, err error) {
	b.settle()
	if len(p) > 0 {
		b.watch.write(p)
	}
	switch {
	case err == io.EOF:
		b.eof = true
		b.watch.close()
	case err != nil && b.err == nil:
		b.err = err
	}
}
