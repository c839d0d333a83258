//! Command-line tools of animatediff-onnx: `build-graph` (ONNX export, [`build`]) and `inspect`
//! (what model files hold). `animate` follows.

pub mod build;
