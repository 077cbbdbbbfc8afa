# deadlabour: build, test, benchmark. `make test` is what CI runs (.ci/run).

SHELL := bash
GO ?= go

# NVML is reached through cgo. go-nvml's header prints deprecation warnings
# on every build; silence them but keep Go's default -O2 -g.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

.PHONY: build demo influxdb test fmt-check vet bench bench-collectors gpu-check clean

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

# The daemon's CPU and RSS over 60 s on 8 simulated H100s polled every
# 100 ms, against the same daemon with GPUs off (docs/benchmarks.md).
bench-collectors: influxdb
	scripts/bench-collectors.sh

# On a machine with an NVIDIA GPU: probe, then 60 s under load comparing the
# energy counter with the integral of power samples (docs/real-gpu.md).
gpu-check:
	scripts/gpu-check.sh

clean:
	rm -rf bin
