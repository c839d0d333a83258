//! Writes ONNX models from Rust: protobuf messages for the subset of the schema we emit
//! ([`proto`]), a graph builder that streams weights to external data ([`Graph`]), and typed
//! operator helpers ([`ops`]). Knows nothing about diffusion.

pub mod attention;
pub mod attention_form;
pub mod graph;
pub mod ops;
pub mod proto;

pub use attention::{MS_DOMAIN, SDPA_MIN_OPSET};
pub use attention_form::AttentionForm;
pub use graph::{external_data_path, DataSet, Dim, ElemType, ExternalData, Graph, Reused, Value, WeightStorage, MAX_EXTERNAL_FILE_BYTES};

/// Default opset: 17 (LayerNormalization available; GroupNorm is decomposed, docs/spec.md §10).
pub const DEFAULT_OPSET: i64 = 17;
