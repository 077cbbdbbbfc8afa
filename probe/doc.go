// Package probe is what `deadlabourd probe` prints: per GPU what it is and
// what it supports, and with --measure how well each GPU's energy counter
// agrees with the integral of its power samples.
package probe
