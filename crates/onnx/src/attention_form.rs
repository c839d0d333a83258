//! The ONNX form attention is written in: a graph-wide setting
//! ([`Graph::attention_form`](crate::Graph::attention_form)), since which form serves a runtime
//! best is a deployment choice (`build-graph --attention` picks it). The attention itself is
//! emitted by [`Graph::attention`](crate::Graph::attention).
//!
//! - [`AttentionForm::Mha`]: ONNX Runtime's `com.microsoft.MultiHeadAttention`, unpacked Q, K and
//!   V, no bias, mask or past. ORT's CPU kernel (fp32) runs it tiled (flash attention, the score
//!   matrix is never built), CUDA with its memory-efficient / flash kernels, DirectML has one;
//!   tract imports it as its SDPA, which our tract session runs block by block
//!   (`animatediff_runtime::tract_attention`). ORT CPU has no fp16 kernel.
//! - [`AttentionForm::Sdpa`]: the standard ONNX `Attention` (opset 23), for runtimes that fuse it
//!   (TensorRT ≥ 10.14, tract). ORT's CPU kernel builds the full score matrix.
//! - [`AttentionForm::Plain`]: MatMul → Softmax → MatMul with Q scaled before the first MatMul,
//!   the pattern TensorRT fuses in fp16/bf16; every runtime runs it, each materialising the
//!   `(N, heads, L, S)` scores, which is quadratic in the sequence length.

use std::str::FromStr;

/// The ONNX form attention is written in (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionForm {
    #[default]
    Mha,
    Sdpa,
    Plain,
}

impl AttentionForm {
    pub const ALL: [AttentionForm; 3] = [AttentionForm::Mha, AttentionForm::Sdpa, AttentionForm::Plain];

    pub fn as_str(self) -> &'static str {
        match self {
            AttentionForm::Mha => "mha",
            AttentionForm::Sdpa => "sdpa",
            AttentionForm::Plain => "plain",
        }
    }

    /// Whether the form builds the whole `(N, heads, L, S)` score matrix on ONNX Runtime's CPU
    /// provider (memory quadratic in the sequence length).
    pub fn materialises_scores_on_ort_cpu(self) -> bool {
        self != AttentionForm::Mha
    }
}

impl std::fmt::Display for AttentionForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttentionForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AttentionForm::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown attention form `{s}`: expected mha, sdpa or plain"))
    }
}
