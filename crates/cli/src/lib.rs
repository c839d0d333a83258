//! Command-line tools of animatediff-onnx. Today: `inspect` (what model files hold, as the graph
//! builder reads them). `build-graph` and `animate` follow.
