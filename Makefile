# deadlabour: build, test, benchmark. `make test` is what CI runs (.ci/run).

SHELL := bash
GO ?= go

# NVML is reached through cgo. go-nvml's header prints deprecation warnings
# on every build; silence them but keep Go's default -O2 -g.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

.PHONY: build demo demo-check influxdb test fmt-check vet bench bench-collectors bench-proxy bench-sink spool-choice chaos gpu-check clean install fleet-sizing

# Where `make install` puts things. DESTDIR stages an install for packaging
# (nothing outside it is touched then); PREFIX=/usr for a distribution package.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
UDEVRULESDIR ?= $(SYSCONFDIR)/udev/rules.d
# StateDirectory= in the unit: always under /var/lib.
STATEDIR := /var/lib/deadlabour
CONFDIR := $(SYSCONFDIR)/deadlabour

# The daemon and the demo driver.
build:
	$(GO) build -o bin/deadlabourd ./cmd/deadlabourd
	$(GO) build -o bin/deadlabour-demo ./cmd/deadlabour-demo

# The main job: simulated H100s, fake upstreams, a local InfluxDB, a table
# of what each model cost. Needs no GPU.
demo: build
	scripts/demo.sh

# The demo driver against the fake upstreams for a few seconds, its J per
# output token held to the cited ranges (docs/methodology.md, "The demo").
# Timed, so not part of make test.
demo-check:
	DEADLABOUR_TIMED_TESTS=1 $(GO) test -count=1 -run TestDriverInCitedRanges -v ./cmd/deadlabour-demo/

# The real InfluxDB 1.8.3 the tests run against (built once, cached in .cache/).
influxdb:
	scripts/influxdb.sh install

test: influxdb fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

fmt-check:
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './.cache/*')); \
	if [ -n "$$files" ]; then echo "gofmt -w needed on:"; echo "$$files"; exit 1; fi

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . ./...

# The daemon's CPU and RSS over 60 s on 8 simulated H100s polled every
# 100 ms, against the same daemon with GPUs off (docs/benchmarks.md).
bench-collectors: influxdb
	scripts/bench-collectors.sh

# The sink with its spool against a raw line-protocol batch writer into the
# same InfluxDB (points/s), and the time from a request's end to its record
# being queryable through the daemon (docs/benchmarks.md, "Sink").
bench-sink: influxdb
	$(GO) test -run '^$$' -bench 'BenchmarkSinkThroughput' -benchtime 1x ./sink/
	$(GO) test -run '^$$' -bench 'BenchmarkRecordLatency' -benchtime 1x ./e2e/

# bbolt against tidwall/wal on the spool's access pattern, in a module of its
# own (docs/operations.md, "The spool"). SPOOL_DIR: the disk to measure.
spool-choice:
	cd scripts/spoolchoice && $(GO) run . -dir $(or $(SPOOL_DIR),/var/tmp)

# The chaos tests with InfluxDB down for 60 s (`make test` runs them with a
# 5 s outage): outage, SIGKILL, spool cap, wrong token.
chaos: influxdb
	DEADLABOUR_CHAOS_OUTAGE=60s $(GO) test -race -count=1 -timeout 10m -run 'Chaos' ./e2e/

# On a machine with an NVIDIA GPU: probe, then 60 s under load comparing the
# energy counter with the integral of power samples (docs/real-gpu.md).
gpu-check:
	scripts/gpu-check.sh

# Points and bytes per node per day in InfluxDB 1.8 (docs/operations.md, "Fleet").
fleet-sizing: influxdb
	$(GO) run ./scripts/fleetsizing

# The binary, the hardened unit, its user, the RAPL udev rule, a state
# directory, and /etc/deadlabour/config.yaml (from config/example.yaml, token
# read from the systemd credential) and an empty influx-token unless they
# exist: an upgrade never overwrites them. Without DESTDIR, as root, it also
# creates the user and reloads systemd and udev; it enables nothing.
# docs/operations.md, "Install on a GPU node".
install: build
	install -D -m 0755 bin/deadlabourd $(DESTDIR)$(BINDIR)/deadlabourd
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(CONFDIR)
	sed -e 's#/usr/local/bin/deadlabourd#$(BINDIR)/deadlabourd#' -e 's#/etc/deadlabour/#$(CONFDIR)/#g' \
		systemd/deadlabourd.service > $(DESTDIR)$(UNITDIR)/deadlabourd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/deadlabourd.service
	install -m 0644 systemd/sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/deadlabour.conf
	install -m 0644 systemd/rapl.rules $(DESTDIR)$(UDEVRULESDIR)/70-deadlabour-rapl.rules
	install -d -m 0750 $(DESTDIR)$(STATEDIR)
	@if [ -e $(DESTDIR)$(CONFDIR)/config.yaml ]; then \
		echo "kept $(DESTDIR)$(CONFDIR)/config.yaml (compare with config/example.yaml)"; \
	else \
		sed -e 's#^node: #\# node: #' \
			-e '/^influx:/,/^[a-z]/s#^  token_env: INFLUX_TOKEN#  token_env: ""#' \
			-e '/^influx:/,/^[a-z]/s#^  token_file: ""#  token_file: /run/credentials/deadlabourd.service/influx-token#' \
			config/example.yaml > $(DESTDIR)$(CONFDIR)/config.yaml && \
		chmod 0644 $(DESTDIR)$(CONFDIR)/config.yaml && \
		echo "wrote $(DESTDIR)$(CONFDIR)/config.yaml: edit upstreams, models and influx"; \
	fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/influx-token ]; then \
		install -m 0600 /dev/null $(DESTDIR)$(CONFDIR)/influx-token && \
		echo "wrote an empty $(DESTDIR)$(CONFDIR)/influx-token: put the InfluxDB token there (1.x: user:password)"; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		set -x; \
		systemd-sysusers $(SYSUSERSDIR)/deadlabour.conf; \
		chown deadlabour:deadlabour $(STATEDIR); \
		if command -v udevadm >/dev/null; then \
			udevadm control --reload && udevadm trigger --subsystem-match=powercap --action=add; fi; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi
	@echo "next: edit $(CONFDIR)/config.yaml, then: systemctl enable --now deadlabourd"

# The metering proxy against nginx and a direct call (docs/benchmarks.md).
bench-proxy:
	scripts/bench-proxy.sh

clean:
	rm -rf bin
