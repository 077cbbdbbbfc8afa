package main

// Streams: the time each event takes through the proxy, and memory per
// open stream (the hold subcommand).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// eventClock keeps when the fake flushed each event of each request.
type eventClock struct {
	mu   sync.Mutex
	sent map[string][]time.Time
}

func (c *eventClock) onEvent(id string, n int) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.sent[id]) <= n {
		c.sent[id] = append(c.sent[id], time.Time{})
	}
	c.sent[id][n] = now
}

func (c *eventClock) at(id string, n int) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < len(c.sent[id]) && !c.sent[id][n].IsZero() {
		return c.sent[id][n], true
	}
	return time.Time{}, false
}

func streamBody(tokens int) string {
	return fmt.Sprintf(`{"model":"bench","stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"stream me an answer"}]}`, tokens)
}

// openStream posts a streamed chat request with id and calls onEvent with
// the index of each event as it is read, until the stream ends or onEvent
// says stop.
func openStream(ctx context.Context, client *http.Client, target, id string, tokens int, onEvent func(i int) bool) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", target+"/v1/chat/completions", strings.NewReader(streamBody(tokens)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	r := bufio.NewReaderSize(res.Body, 64<<10)
	i := 0
	for {
		line, err := r.ReadSlice('\n')
		if len(bytes.TrimSpace(line)) == 0 && err == nil {
			if !onEvent(i) {
				return nil
			}
			i++
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func streams(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18001", "address of the in-process fake")
	spec := fs.String("targets", "", "name=url,... (the fake, or proxies in front of it), measured in turn")
	n := fs.Int("streams", 20, "concurrent streams")
	rounds := fs.Int("rounds", 3, "turns of each target")
	tokens := fs.Int("tokens", 64, "tokens per stream")
	delay := fs.Duration("token-delay", 10*time.Millisecond, "between tokens")
	fs.Parse(args)
	tgts, err := targets(*spec)
	if err != nil {
		return err
	}
	clock := &eventClock{sent: map[string][]time.Time{}}
	client, stop, err := startFake(ctx, *listen, fakeupstream.Options{TokenDelay: *delay, OnEvent: clock.onEvent}, *n*2)
	if err != nil {
		return err
	}
	defer stop()
	delays := make([][]time.Duration, len(tgts))
	errs := make([]int, len(tgts))
	start := time.Now()
	for round := range *rounds {
		for t, tg := range tgts {
			var mu sync.Mutex
			var wg sync.WaitGroup
			for s := range *n {
				wg.Go(func() {
					id := fmt.Sprintf("bench-%d-%s-%d-%d", start.UnixNano(), tg[0], round, s)
					var mine []time.Duration
					err := openStream(ctx, client, tg[1], id, *tokens, func(i int) bool {
						now := time.Now()
						// The role chunk and the tokens: the events the proxy
						// passes as they are (the ones after may be edited).
						if i <= *tokens {
							if sent, ok := clock.at(id, i); ok {
								mine = append(mine, now.Sub(sent))
							}
						}
						return true
					})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs[t]++
					}
					delays[t] = append(delays[t], mine...)
				})
			}
			wg.Wait()
		}
	}
	for t := range tgts {
		printJSON(named{tgts[t][0], result{Kind: "stream", Target: tgts[t][1], Count: len(delays[t]), Errors: errs[t],
			Seconds: time.Since(start).Seconds(), Percents: percentiles(delays[t])}})
	}
	return nil
}

func hold(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18001", "address of the in-process fake")
	target := fs.String("target", "", "base URL")
	n := fs.Int("streams", 500, "streams to hold open")
	dur := fs.Duration("hold", 5*time.Second, "how long to hold them once all are open")
	fs.Parse(args)
	client, stop, err := startFake(ctx, *listen, fakeupstream.Options{TokenDelay: time.Hour}, *n)
	if err != nil {
		return err
	}
	defer stop()
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opened sync.WaitGroup
	opened.Add(*n)
	errc := make(chan error, *n)
	var wg sync.WaitGroup
	for s := range *n {
		wg.Go(func() {
			once := sync.OnceFunc(opened.Done)
			defer once()
			err := openStream(hctx, client, *target, fmt.Sprintf("hold-%d", s), 2, func(i int) bool {
				if i == 1 { // the role chunk and the first token are in: the stream is open
					once()
				}
				return true
			})
			if err != nil && hctx.Err() == nil {
				errc <- err
			}
		})
	}
	opened.Wait()
	fmt.Printf("{\"kind\":\"hold\",\"streams\":%d,\"state\":\"holding\"}\n", *n)
	select {
	case <-time.After(*dur):
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	close(errc)
	errs := 0
	for range errc {
		errs++
	}
	fmt.Printf("{\"kind\":\"hold\",\"streams\":%d,\"state\":\"done\",\"errors\":%d}\n", *n, errs)
	return nil
}
