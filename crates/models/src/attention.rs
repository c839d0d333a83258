//! The attention of diffusers' `Attention` (`CrossAttention`), serving the spatial transformers
//! (self- and cross-attention), the motion modules (self-attention along the frames) and the VAE's
//! mid block: q/k/v projections, the attention itself (`Graph::attention`, in the form
//! `build-graph --attention` chose), and `to_out.0`.

use onnx_writer::{Graph, Value};

use crate::error::Result;
use crate::nn::Linear;
use crate::weights::Weights;

/// Attention hyper-parameters; the default is the SD1.5 UNet's self-attention.
#[derive(Clone, Copy, Debug)]
pub struct AttentionConfig {
    pub heads: usize,
    /// Width of what keys and values are projected from, when not the queries' (cross-attention).
    pub context_dim: Option<usize>,
    /// Whether q/k/v have biases (the VAE's do; the UNet's do not). `to_out.0` always has one.
    pub qkv_bias: bool,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        Self { heads: 8, context_dim: None, qkv_bias: false }
    }
}

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
    heads: usize,
}

impl Attention {
    pub fn new(g: &mut Graph, w: Weights, channels: usize, cfg: AttentionConfig) -> Result<Self> {
        let context = cfg.context_dim.unwrap_or(channels);
        Ok(Self {
            to_q: Linear::new(g, w.pp("to_q"), channels, channels, cfg.qkv_bias)?,
            to_k: Linear::new(g, w.pp("to_k"), context, channels, cfg.qkv_bias)?,
            to_v: Linear::new(g, w.pp("to_v"), context, channels, cfg.qkv_bias)?,
            to_out: Linear::new(g, w.pp("to_out.0"), channels, channels, true)?,
            channels,
            heads: cfg.heads,
        })
    }

    /// Self-attention over `x`: `(N, L, C)`.
    pub fn forward(&self, g: &mut Graph, x: &Value) -> Value {
        let q = self.to_q.forward(g, x);
        let k = self.to_k.forward(g, x);
        let v = self.to_v.forward(g, x);
        let o = g.attention(&q, &k, &v, self.channels, self.heads);
        self.to_out.forward(g, &o)
    }

    /// Cross-attention of the frames `x`: `(B·F, L, C)` (video-major) to their video's text
    /// `context`: `(B, S, Cctx)`. The reference repeats the context per frame and attends frame by
    /// frame; since every query attends to its own video's keys alone, the F·L queries of a video
    /// are attended together and the keys and values are projected once per video instead of once
    /// per frame: the same numbers, 1/F of the key/value work, larger matrix products. With one
    /// context per frame, `(B·F, S, Cctx)` (prompt travel), the same nodes attend frame by frame.
    pub fn forward_cross(&self, g: &mut Graph, x: &Value, context: &Value) -> Value {
        let q = self.to_q.forward(g, x);
        let b = g.shape_slice(context, 0, 1);
        let rest = g.const_i64(&[-1, self.channels as i64]);
        let per_video = g.concat(&[&b, &rest], 0);
        let q = g.reshape(&q, &per_video);
        let k = self.to_k.forward(g, context);
        let v = self.to_v.forward(g, context);
        let o = g.attention(&q, &k, &v, self.channels, self.heads);
        let per_frame = g.shape(x);
        let o = g.reshape(&o, &per_frame);
        self.to_out.forward(g, &o)
    }
}
