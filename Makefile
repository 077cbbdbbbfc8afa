# deadlabour: build, test, benchmark. `make test` is what CI runs (.ci/run).

SHELL := bash
GO ?= go

# NVML is reached through cgo. go-nvml's header prints deprecation warnings
# on every build; silence them but keep Go's default -O2 -g.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

.PHONY: build demo influxdb test fmt-check vet bench bench-proxy clean

# The daemon and the demo driver.
build:
	$(GO) build -o bin/deadlabourd ./cmd/deadlabourd
	$(GO) build -o bin/deadlabour-demo ./cmd/deadlabour-demo

# The main job: simulated H100s, fake upstreams, a local InfluxDB, a table
# of what each model cost. Needs no GPU.
demo: build
	scripts/demo.sh

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

# The metering proxy against nginx and a direct call (docs/benchmarks.md).
bench-proxy:
	scripts/bench-proxy.sh

clean:
	rm -rf bin
