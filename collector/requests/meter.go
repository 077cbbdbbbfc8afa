package requests

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// framing is how a response body is cut into JSON documents.
type framing int

const (
	framingNone framing = iota // not read: another type, or an encoded body
	framingJSON                // one JSON document
	framingSSE                 // text/event-stream, one document per event
)

// framingOf tells how to read a response from its headers. A compressed body
// is not read (its usage stays unknown): the proxy forwards Accept-Encoding
// as the client sent it, and inference servers rarely compress.
func framingOf(h http.Header) framing {
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return framingNone
	}
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch mt {
	case "text/event-stream":
		return framingSSE
	case "application/json":
		return framingJSON
	}
	return framingNone
}

// meter reads a response as it passes and keeps what it says about usage
// and timing. It holds at most about twice limit bytes at any time.
type meter struct {
	dialect *dialect
	framing framing
	limit   int
	now     func() time.Time
	key     []byte // `"usage"`, quoted

	sse  sseParser
	body []byte // JSON: the body so far, or its tail once over limit
	over bool   // JSON: the body was larger than limit

	usage      usage
	hasUsage   bool
	firstToken time.Time
	done       bool // the stream said [DONE]
	closed     bool
}

func newMeter(d *dialect, f framing, limit int, now func() time.Time) *meter {
	m := &meter{dialect: d, framing: f, limit: limit, now: now, key: []byte(`"` + d.usageKey + `"`)}
	m.sse = sseParser{limit: limit, onEvent: m.event}
	return m
}

// write shows the meter the next bytes of the body.
func (m *meter) write(p []byte) {
	if m.closed {
		return
	}
	switch m.framing {
	case framingSSE:
		m.sse.write(p)
	case framingJSON:
		m.body = append(m.body, p...)
		if len(m.body) > m.limit {
			m.over = true
			if len(m.body) > 2*m.limit { // keep the tail, copying seldom
				m.body = append(m.body[:0], m.body[len(m.body)-m.limit:]...)
			}
		}
	}
}

// close ends the body: at its end, or where it was cut short. Calling it
// again does nothing.
func (m *meter) close() {
	if m.closed {
		return
	}
	m.closed = true
	switch m.framing {
	case framingSSE:
		m.sse.close()
	case framingJSON:
		if !m.over {
			m.event(m.body)
		} else {
			m.tail(m.body[len(m.body)-m.limit:])
		}
		m.body = nil
	}
}

// event reads one JSON document: a whole body or one event's data. The
// last usage block seen wins: servers that report usage on every chunk
// report it cumulatively, so summing would count tokens twice.
func (m *meter) event(doc []byte) {
	if m.done {
		return
	}
	if bytes.Equal(doc, []byte("[DONE]")) {
		m.done = true
		return
	}
	// Once the first token is seen only usage matters: skip the decoding of
	// the chunks that cannot carry it.
	if (!m.firstToken.IsZero() || m.framing != framingSSE) && !bytes.Contains(doc, m.key) {
		return
	}
	u, hasUsage, hasToken := m.dialect.document(doc)
	if hasUsage {
		m.usage, m.hasUsage = u, true
	}
	// Only a stream shows when its first token came; a whole body says
	// nothing about it.
	if hasToken && m.firstToken.IsZero() && m.framing == framingSSE {
		m.firstToken = m.now()
	}
}

// tail finds the usage block in the end of a body too large to keep whole.
// An unescaped "usage" followed by a colon can only be a key (inside a JSON
// string its quotes would be escaped), and servers write usage after the
// choices, so the last such key whose value is an object is the one.
func (m *meter) tail(t []byte) {
	for end := len(t); ; {
		i := bytes.LastIndex(t[:end], m.key)
		if i < 0 {
			return
		}
		end = i
		rest := bytes.TrimLeft(t[i+len(m.key):], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		var obj json.RawMessage
		if json.NewDecoder(bytes.NewReader(rest[1:])).Decode(&obj) != nil || obj[0] != '{' {
			continue
		}
		doc := make([]byte, 0, len(m.key)+len(obj)+3)
		doc = append(append(append(append(doc, '{'), m.key...), ':'), obj...)
		if u, ok, _ := m.dialect.document(append(doc, '}')); ok {
			m.usage, m.hasUsage = u, true
			return
		}
	}
}

// sseParser cuts a text/event-stream into events and hands on their data
// (the lines "data: ..." of an event joined by "\n"). Lines end in LF or
// CRLF; a lone CR, which the SSE standard also allows, is not an end of line
// here: no inference server sends one. Comments (keep-alives) and fields
// other than data are skipped. A line or an event's data longer than limit
// is dropped whole, so memory stays bounded whatever the upstream sends.
type sseParser struct {
	limit   int
	onEvent func(data []byte)

	line    []byte // an unfinished line carried over from the last write
	long    bool   // the current line is over limit: skip to its end
	data    []byte // the data of the event being read
	dropped bool   // the current event's data is over limit
}

func (p *sseParser) write(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.carry(b)
			return
		}
		part := b[:i]
		b = b[i+1:]
		switch {
		case p.long:
			p.long = false
		case len(p.line)+len(part) > p.limit:
			// too long: dropped
		case len(p.line) > 0:
			p.line = append(p.line, part...)
			p.handle(p.line)
		default:
			p.handle(part)
		}
		p.line = p.line[:0]
	}
}

// carry keeps the start of a line that the next write will finish.
func (p *sseParser) carry(b []byte) {
	if p.long {
		return
	}
	if len(p.line)+len(b) > p.limit {
		p.long = true
		p.line = p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

func (p *sseParser) handle(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		p.dispatch()
		return
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	if !bytes.Equal(field, []byte("data")) || p.dropped {
		return // a comment (empty field), event:, id:, retry:
	}
	value = bytes.TrimPrefix(value, []byte(" "))
	extra := len(value)
	if len(p.data) > 0 {
		extra++
	}
	if len(p.data)+extra > p.limit {
		p.dropped = true
		return
	}
	if len(p.data) > 0 {
		p.data = append(p.data, '\n')
	}
	p.data = append(p.data, value...)
}

func (p *sseParser) dispatch() {
	if len(p.data) > 0 && !p.dropped {
		p.onEvent(p.data)
	}
	p.data = p.data[:0]
	p.dropped = false
}

// close ends the stream: a last line with no newline, and a last event with
// no blank line after it, still count.
func (p *sseParser) close() {
	if len(p.line) > 0 && !p.long {
		p.handle(p.line)
	}
	p.line, p.long = nil, false
	p.dispatch()
	p.data = nil
}

// meteredBody is an upstream response body that shows every byte it passes
// to a meter, and remembers how reading it ended.
type meteredBody struct {
	io.ReadCloser
	meter *meter
	eof   bool  // read to the end
	err   error // the first read error, other than io.EOF
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.meter.write(p[:n])
	}
	switch {
	case err == io.EOF:
		b.eof = true
		b.meter.close()
	case err != nil && b.err == nil:
		b.err = err
	}
	return n, err
}
