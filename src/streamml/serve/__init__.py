"""The model server: one data plane (``dataplane``) under OIP v2 and TF Serving front ends, REST and gRPC."""
