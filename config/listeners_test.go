package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestListenersDefaultsAndValidation: the listeners block defaults to a 2m
// idle timeout, and a zero one is a problem naming its key.
func TestListenersDefaultsAndValidation(t *testing.T) {
	c, err := Parse("t.yaml", []byte("node: n\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.IdleTimeout.D() != 2*time.Minute {
		t.Errorf("listeners.idle_timeout defaults to %s, want 2m", c.Listeners.IdleTimeout.D())
	}
	_, err = Parse("t.yaml", []byte("node: n\nlisteners:\n  idle_timeout: 0s\n"), -1)
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "listeners.idle_timeout") {
		t.Errorf("idle_timeout 0s: %v, want a problem naming listeners.idle_timeout", err)
	}
}
