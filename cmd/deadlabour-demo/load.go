package main

// The load: clients that keep each upstream's batch full.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

type loadSpec struct {
	duration             time.Duration
	minOutput, maxOutput int
	seed                 uint64
}

// load keeps each upstream's batch of requests in flight for spec.duration
// (a closed loop: each of an upstream's batch workers sends its next prompt
// when the last is answered), then lets the requests in flight finish. A
// third of the prompts are streamed.
func load(ctx context.Context, ups []*upstream, spec loadSpec) (sent, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, u := range ups {
		n += u.batch
	}
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(spec.duration)
	for ui, u := range ups {
		for w := range u.batch {
			rng := rand.New(rand.NewPCG(spec.seed, uint64(ui<<16|w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && time.Now().Before(deadline) {
					err := post(ctx, client, "http://"+u.listen+"/v1/chat/completions", prompt(rng, u.model, spec))
					mu.Lock()
					sent++
					if err != nil {
						failed++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return sent, failed
}

// prompt is one request body: 5-200 words of prompt, an output length in
// [spec.minOutput, spec.maxOutput], streamed one time in three.
func prompt(rng *rand.Rand, model string, spec loadSpec) []byte {
	words := 5 + rng.IntN(200)
	text := make([]byte, 0, words*6)
	for range words {
		text = append(text, "lorem "...)
	}
	req := map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": string(text)}},
		"max_tokens": spec.minOutput + rng.IntN(spec.maxOutput-spec.minOutput+1),
		"stream":     rng.IntN(3) == 0,
	}
	body, _ := json.Marshal(req)
	return body
}

func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer demo-key-"+fmt.Sprint(len(body)%3))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
