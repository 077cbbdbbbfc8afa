package otlp

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // exporters may compress with gzip
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GRPCServerOptions are the options the gRPC server that RegisterGRPC
// serves on must be made with: a message size cap of MaxBodyBytes.
func (r *Receiver) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(int(min(r.opts.MaxBodyBytes, 1<<30)))}
}

// RegisterGRPC registers the OTLP/gRPC TraceService on s. Its answers
// follow the OTLP specification: OK with partial_success counting the
// inference spans that could not be used; UNAUTHENTICATED without the
// bearer token (metadata authorization: Bearer ...); UNAVAILABLE with
// RetryInfo when the recorder is full, UNAVAILABLE when it failed.
// Bodies that do not decode or are too large are refused by gRPC itself
// (INTERNAL, RESOURCE_EXHAUSTED).
func (r *Receiver) RegisterGRPC(s *grpc.Server) {
	ptraceotlp.RegisterGRPCServer(s, &grpcServer{r: r})
}

type grpcServer struct {
	ptraceotlp.UnimplementedGRPCServer
	r *Receiver
}

func (g *grpcServer) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	r := g.r
	md, _ := metadata.FromIncomingContext(ctx)
	if !r.authorized(md.Get("authorization")) {
		r.stats.refused.Add(1)
		return ptraceotlp.NewExportResponse(), status.Error(codes.Unauthenticated, "a bearer token is required (metadata authorization: Bearer ...)")
	}
	out := r.export(req.Traces())
	if out.err != nil {
		r.stats.refused.Add(1)
		if full, ok := errors.AsType[*FullError](out.err); ok {
			st := status.New(codes.Unavailable, full.Error()+": retry later")
			d := full.RetryAfter
			if d <= 0 {
				d = DefaultRetryAfter
			}
			if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
				st = withInfo
			}
			return ptraceotlp.NewExportResponse(), st.Err()
		}
		return ptraceotlp.NewExportResponse(), status.Error(codes.Unavailable, fmt.Sprintf("the spans could not be recorded: %v", out.err))
	}
	r.stats.exports.Add(1)
	return out.response(), nil
}
