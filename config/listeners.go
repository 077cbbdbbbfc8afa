package config

import "time"

// Listeners bounds how long the proxy and admin listeners keep a client
// they are not serving: an idle kept-alive connection, or a request whose
// headers or (admin) body do not arrive.
type Listeners struct {
	// IdleTimeout closes a kept-alive connection with no request for this
	// long, on every proxy and the admin listener.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ReadHeaderTimeout bounds reading a request's headers, on every
	// listener.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// AdminReadTimeout bounds reading a whole admin request, body included
	// (event-API posts are small). Proxied bodies are bounded by
	// proxy.body_read_timeout instead: they may upload slowly.
	AdminReadTimeout Duration `yaml:"admin_read_timeout"`
}

// DefaultListeners are the listeners' defaults.
func DefaultListeners() Listeners {
	return Listeners{
		IdleTimeout:       Duration(2 * time.Minute),
		ReadHeaderTimeout: Duration(30 * time.Second),
		AdminReadTimeout:  Duration(30 * time.Second),
	}
}

// listeners checks the listeners block.
func (v *validator) listeners() {
	l := v.c.Listeners
	v.positiveDuration("listeners.idle_timeout", l.IdleTimeout)
	v.positiveDuration("listeners.read_header_timeout", l.ReadHeaderTimeout)
	v.positiveDuration("listeners.admin_read_timeout", l.AdminReadTimeout)
}
