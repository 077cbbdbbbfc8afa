// Package cli is deadlabourd's command line: one file per subcommand
// (run, check-config, probe, report, audit, version), each its flags and
// the wiring of the packages that do the work. Run is main's, and the
// tests' way in.
package cli
