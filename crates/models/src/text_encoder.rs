//! The CLIP text encoder (docs/spec.md §6.1): token + position embeddings, pre-LayerNorm transformer
//! layers with causal self-attention and quick-GELU MLPs, final LayerNorm.
//! `input_ids` int64 [B,77] → `last_hidden_state` f32 [B,77,D] and `hidden_states` f32 [L,B,77,D]:
//! every layer's output through the final LayerNorm, so that one artifact serves every CLIP skip
//! (N = 1 is `last_hidden_state`, N is `hidden_states[L − N]`). No padding mask (docs/spec.md
//! §11.12). Textual-inversion vectors are rows appended to the token table (ids from the
//! vocabulary's size on).

use animatediff_formats::arch::TextEncoderArch;
use animatediff_formats::ComponentWeights;
use onnx_writer::{Dim, ElemType, Graph, Value};

use crate::error::Result;
use crate::nn::{LayerNorm, Linear};
use crate::weights::Weights;

pub const SEQUENCE_LENGTH: usize = 77;

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct TextEncoder {
    arch: TextEncoderArch,
    token_embedding: Value,
    position_embedding: Value,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
}

impl TextEncoder {
    /// The encoder's weights from `text` (with `loras` merged); `extra_tokens` holds the rows
    /// appended to the token table (textual-inversion vectors, `n × D`), ids `vocab_size..`.
    pub fn new(
        g: &mut Graph,
        arch: TextEncoderArch,
        text: &ComponentWeights,
        loras: Option<&animatediff_formats::LoraSet>,
        extra_tokens: &[f32],
    ) -> Result<Self> {
        let w = Weights::new(text, loras).pp("text_model");
        let d = arch.hidden_size;
        let table = "embeddings.token_embedding.weight";
        let token_embedding = if extra_tokens.is_empty() {
            w.tensor(g, table, &[arch.vocab_size, d])?
        } else {
            let mut rows = w.read(table, &[arch.vocab_size, d])?;
            rows.extend_from_slice(extra_tokens);
            w.put(g, table, &[arch.vocab_size + extra_tokens.len() / d, d], &rows)?
        };
        let pos = w.read("embeddings.position_embedding.weight", &[arch.max_position_embeddings, d])?;
        let position_embedding = w.put(g, "embeddings.position_embedding.weight", &[SEQUENCE_LENGTH, d], &pos[..SEQUENCE_LENGTH * d])?;
        let mut layers = Vec::new();
        for i in 0..arch.num_hidden_layers {
            let lw = w.pp(format!("encoder.layers.{i}"));
            layers.push(EncoderLayer {
                layer_norm1: LayerNorm::new(g, lw.pp("layer_norm1"), d, 1e-5)?,
                q_proj: Linear::new(g, lw.pp("self_attn.q_proj"), d, d, true)?,
                k_proj: Linear::new(g, lw.pp("self_attn.k_proj"), d, d, true)?,
                v_proj: Linear::new(g, lw.pp("self_attn.v_proj"), d, d, true)?,
                out_proj: Linear::new(g, lw.pp("self_attn.out_proj"), d, d, true)?,
                layer_norm2: LayerNorm::new(g, lw.pp("layer_norm2"), d, 1e-5)?,
                fc1: Linear::new(g, lw.pp("mlp.fc1"), d, arch.intermediate_size, true)?,
                fc2: Linear::new(g, lw.pp("mlp.fc2"), arch.intermediate_size, d, true)?,
            });
        }
        let final_layer_norm = LayerNorm::new(g, w.pp("final_layer_norm"), d, 1e-5)?;
        Ok(Self { arch, token_embedding, position_embedding, layers, final_layer_norm })
    }

    pub fn build(&self, g: &mut Graph, batch: Option<usize>) -> Value {
        let b = Dim::fixed_or_sym(batch, "batch");
        let ids = g.input("input_ids", ElemType::I64, &[b.clone(), Dim::Fixed(SEQUENCE_LENGTH)]);
        let tok = g.gather(&self.token_embedding, &ids, 0);
        let mut h = g.add(&tok, &self.position_embedding);
        // causal mask: token i attends to j ≤ i
        let n = SEQUENCE_LENGTH;
        let mask: Vec<f32> = (0..n * n).map(|k| if k % n > k / n { f32::MIN } else { 0.0 }).collect();
        let mask = g.const_f32(&[n, n], &mask);
        let heads = self.arch.num_attention_heads;
        let d = self.arch.hidden_size;
        let mut states = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            h = g.scoped(&format!("layers.{i}"), |g| {
                let x = l.layer_norm1.forward(g, &h);
                let q = l.q_proj.forward(g, &x);
                let k = l.k_proj.forward(g, &x);
                let v = l.v_proj.forward(g, &x);
                // CLIP's causal mask: plain whatever the graph's form (77 tokens; tract's
                // MultiHeadAttention import has no causal mode, ORT CPU's would not fuse a mask)
                let a = g.plain_attention(&q, &k, &v, d, heads, Some(&mask));
                let a = l.out_proj.forward(g, &a);
                let h = g.add(&h, &a);
                let x = l.layer_norm2.forward(g, &h);
                let x = l.fc1.forward(g, &x);
                // quick_gelu(x) = x · sigmoid(1.702 x)
                let k = g.scalar(1.702);
                let s = g.mul(&x, &k);
                let s = g.sigmoid(&s);
                let x = g.mul(&x, &s);
                let x = l.fc2.forward(g, &x);
                g.add(&h, &x)
            });
            states.push(g.unsqueeze(&h, &[0]));
        }
        let out = self.final_layer_norm.forward(g, &h);
        let out = g.to_f32(&out);
        g.output(&out, "last_hidden_state", ElemType::F32, &[b.clone(), Dim::Fixed(SEQUENCE_LENGTH), Dim::Fixed(d)]);
        // every layer's output through the final LayerNorm (CLIP skip): one LayerNorm over the stack
        let all = g.scoped("clip_skip", |g| {
            let refs: Vec<&Value> = states.iter().collect();
            let stack = g.concat(&refs, 0);
            let normed = self.final_layer_norm.forward(g, &stack);
            g.to_f32(&normed)
        });
        g.output(&all, "hidden_states", ElemType::F32, &[Dim::Fixed(self.layers.len()), b, Dim::Fixed(SEQUENCE_LENGTH), Dim::Fixed(d)]);
        out
    }
}
