"""gRPC client and benchmark for the griffin Triton models. Light: tritonclient.grpc + numpy, never torch."""
