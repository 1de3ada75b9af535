"""ModaVerse gRPC contracts: ``modaverse_protos.<svc>.v1`` holds each service's ``*_pb2`` / ``*_pb2_grpc`` stubs."""

# The contracts' version is the API version; the SDK (``modaverse``) is released with the same one.
__version__ = "0.1.0"
