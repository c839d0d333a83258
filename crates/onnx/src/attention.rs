//! Multi-head scaled dot-product attention, `softmax(Q Kᵀ / √d) V` per head over `(N, L, C)`
//! sequences with channels split head-major (`c = head·d + j`), written in the graph's
//! [`AttentionForm`] (see [`crate::attention_form`] for what each form serves).
//!
//! Whatever the form, the scores and softmax are f32 where the activations are f16 (the fused
//! kernels accumulate in f32; the plain form casts).

use crate::attention_form::AttentionForm;
use crate::graph::{Graph, Value};
use crate::proto::attr_i;

/// ONNX Runtime's contrib operator domain, and the version of it we use.
pub const MS_DOMAIN: &str = "com.microsoft";
const MS_DOMAIN_VERSION: i64 = 1;

/// The first opset with the standard `Attention` operator.
pub const SDPA_MIN_OPSET: i64 = 23;

impl Graph {
    /// `softmax(Q Kᵀ / √d) V` with `heads` heads of `d = C / heads` channels: `q` is `(N, L, C)`,
    /// `k` and `v` are `(N, S, C)`, the result `(N, L, C)`; written in the graph's
    /// [`AttentionForm`].
    pub fn attention(&mut self, q: &Value, k: &Value, v: &Value, channels: usize, heads: usize) -> Value {
        match self.attention_form {
            AttentionForm::Mha => {
                self.op_in(MS_DOMAIN, MS_DOMAIN_VERSION, "MultiHeadAttention", &[q, k, v], vec![attr_i("num_heads", heads as i64)])
            }
            AttentionForm::Sdpa => {
                assert!(self.opset >= SDPA_MIN_OPSET, "the Attention operator needs opset {SDPA_MIN_OPSET}, the graph has {}", self.opset);
                let h = heads as i64;
                self.op("Attention", &[q, k, v], vec![attr_i("q_num_heads", h), attr_i("kv_num_heads", h)])
            }
            AttentionForm::Plain => self.plain_attention(q, k, v, channels, heads, None),
        }
    }

    /// [`Graph::attention`] as MatMul → Softmax → MatMul whatever the graph's form, with an
    /// optional additive `mask` on the scores (broadcast to `(N, heads, L, S)`). Q is scaled by
    /// `1/√d` before the first MatMul (the pattern TensorRT fuses in fp16).
    pub fn plain_attention(&mut self, q: &Value, k: &Value, v: &Value, channels: usize, heads: usize, mask: Option<&Value>) -> Value {
        let d = (channels / heads) as i64;
        let h = heads as i64;
        let scale = self.scalar((d as f32).powf(-0.5));
        let q = self.mul(q, &scale);
        let qh = self.reshape_to(&q, &[0, 0, h, d]);
        let qh = self.transpose(&qh, &[0, 2, 1, 3]);
        let kh = self.reshape_to(k, &[0, 0, h, d]);
        let kh = self.transpose(&kh, &[0, 2, 3, 1]);
        let vh = self.reshape_to(v, &[0, 0, h, d]);
        let vh = self.transpose(&vh, &[0, 2, 1, 3]);
        // mask and softmax in f32 whatever the activation type
        let scores = self.matmul(&qh, &kh);
        let mut scores = self.to_f32(&scores);
        if let Some(m) = mask {
            scores = self.add(&scores, m);
        }
        let p = self.softmax(&scores, -1);
        let p = self.to_act(&p);
        let o = self.matmul(&p, &vh);
        let o = self.transpose(&o, &[0, 2, 1, 3]);
        self.reshape_to(&o, &[0, 0, channels as i64])
    }
}
