package requests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
)

// TestBodyReadTimeout: a client that declares a body and sends it too
// slowly is answered 408 once proxy.body_read_timeout has passed, recorded
// 408 (not served), and its room in the budget comes back.
func TestBodyReadTimeout(t *testing.T) {
	budget := NewBodyBudget(1000, time.Second)
	g := newRig(t, newGate(), Options{BodyBudget: budget, BodyReadTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", g.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second)) // the test's own bound
	if _, err := io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 100\r\n\r\n{\"model\":"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a body sent too slowly: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	var e struct{ Error struct{ Message string } }
	if res.StatusCode != http.StatusRequestTimeout || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error.Message, "proxy.body_read_timeout") {
		t.Errorf("answer %d %s, want 408 with a message naming proxy.body_read_timeout", res.StatusCode, body)
	}
	s := g.rec.wait(t, 1)[0]
	if s.Status != "408" || s.Served {
		t.Errorf("record status %q served %v, want 408, not served", s.Status, s.Served)
	}
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still in use after the body timed out", n)
	}
}

// postChunked sends a chat request of unknown length (chunked) and returns
// its status.
func postChunked(t *testing.T, g *rig, body string) int {
	return postReader(t, g, strings.NewReader(body), -1)
}

// TestBodyOfUnknownLength: a body of unknown length does not reserve
// max_body_bytes before its bytes arrive: a small one passes while most of
// the budget is held. Its room grows as its bytes arrive, a step at once or
// not at all (a request holding room never waits for more): a step that
// finds no room is answered 503 at once, logged with the bytes it wanted.
func TestBodyOfUnknownLength(t *testing.T) {
	const max = 256 << 10
	gt := newGate()
	const wait = 300 * time.Millisecond
	budget := NewBodyBudget(max, wait)
	g := newRig(t, gt, Options{BodyBudget: budget, MaxRequestBytes: max})
	first := make(chan int, 1)
	go func() { first <- postStatus(t, g, chatOfSize(t, 150<<10, false)) }() // 150 KiB held
	<-gt.arrived

	small := make(chan int, 1)
	go func() { small <- postChunked(t, g, chatOfSize(t, 1000, false)) }()
	<-gt.arrived // the small one reached the upstream beside the first

	start := time.Now()
	if st := postChunked(t, g, chatOfSize(t, 100<<10, false)); st != http.StatusServiceUnavailable {
		t.Errorf("a 100 KiB body of unknown length, 42 KiB free after its first 64 KiB: %d, want 503", st)
	}
	if d := time.Since(start); d >= wait {
		t.Errorf("the refusal took %s, the budget's wait %s: a growing body must not wait", d, wait)
	}
	if want := fmt.Sprintf("want_bytes=%d", 2*bodyStep+dialect.MaxIncludeUsageGrowth); !strings.Contains(g.logs.String(), want) {
		t.Errorf("the refusal's log lacks %s:\n%s", want, g.logs.String())
	}
	if n := budget.Refused(); n != 1 {
		t.Errorf("refused = %d, want 1", n)
	}
	close(gt.open)
	if st := <-first; st != http.StatusOK {
		t.Errorf("first: %d, want 200", st)
	}
	if st := <-small; st != http.StatusOK {
		t.Errorf("small body of unknown length: %d, want 200", st)
	}
	ends := g.rec.wait(t, 3)
	var refused []estimator.Span
	for _, s := range ends {
		if s.Status == "503" {
			refused = append(refused, s)
		}
	}
	if len(refused) != 1 || refused[0].Served {
		t.Errorf("records %+v, want one 503, not served", ends)
	}
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still in use after every request ended", n)
	}
}
