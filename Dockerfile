# deadlabourd's image: docker build -t deadlabour/deadlabourd:0.1.0 .
#
# The binary is built with cgo: go-nvml loads the driver's
# libnvidia-ml.so.1 with dlopen, which needs glibc, so the runtime image is
# distroless/base (glibc, CA certificates, no shell), of the same Debian
# release as the build stage. The NVIDIA container runtime mounts the
# driver's libraries into the container (runtimeClassName: nvidia).
FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=1 \
    CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
    GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags="-s -w" -o /out/deadlabourd ./cmd/deadlabourd \
 && /out/deadlabourd version

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/deadlabourd /usr/bin/deadlabourd
# Non-root by default (distroless's nonroot, 65532). The Kubernetes
# DaemonSet runs it as uid 0 with every capability dropped, to read the
# node's root-only RAPL counters; without RAPL (host.rapl: false) it runs
# as this user.
USER 65532:65532
EXPOSE 8081 9464 9465
ENTRYPOINT ["/usr/bin/deadlabourd"]
CMD ["run", "--config", "/etc/deadlabour/config.yaml", "--log-format", "json"]
