package handlers

import "sync/atomic"

// Health is the server's lifecycle as the probes report it: not ready at
// start, ready once MarkReady is called, and draining (never ready again)
// after MarkShuttingDown. It is safe for concurrent use.
type Health struct {
	ready    atomic.Bool
	draining atomic.Bool
}

// NewHealth returns a Health that is not yet ready.
func NewHealth() *Health {
	return &Health{}
}

// MarkReady makes /readyz answer 200, unless shutdown has begun.
func (h *Health) MarkReady() { h.ready.Store(true) }

// MarkShuttingDown makes /readyz answer 503 for good, so load balancers stop
// sending new requests while in-flight ones finish.
func (h *Health) MarkShuttingDown() { h.draining.Store(true) }

// state returns the readiness status code and a one-word reason.
func (h *Health) state() (int, string) {
	switch {
	case h.draining.Load():
		return 503, "shutting down"
	case !h.ready.Load():
		return 503, "not ready"
	default:
		return 200, "ready"
	}
}
