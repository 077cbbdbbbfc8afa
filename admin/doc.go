// Package admin is the daemon's admin listener (loopback by default): one
// HTTP server on which each feature registers its own routes (Registrar),
// the bearer-token check of admin.token_file in one place, the routes'
// paths and JSON wire types, and the Client that the commands asking a
// running daemon (audit, report) use.
package admin
