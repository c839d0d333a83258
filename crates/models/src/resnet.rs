//! The ResNet block of the UNet (`ResnetBlock3D`, docs/spec.md §1.3) and of the VAE decoder: GroupNorm →
//! SiLU → conv → (+ time embedding, UNet only) → GroupNorm → SiLU → conv, plus the (1×1-conv)
//! shortcut. In the UNet its GroupNorms span all frames for v1 (docs/spec.md §3.2).

use onnx_writer::{Graph, Value};

use crate::error::Result;
use crate::nn::{Conv2d, Frames, GroupNorm, Linear, NormSpan};
use crate::weights::Weights;

/// ResNet hyper-parameters; the default is the SD1.5 UNet's (with v2/v3's per-frame norms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResnetConfig {
    /// Output channels; the input's when `None`.
    pub out_channels: Option<usize>,
    /// Width of the time embedding the block adds (`time_emb_proj`); `None`: no time embedding.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f32,
    pub span: NormSpan,
}

impl Default for ResnetConfig {
    fn default() -> Self {
        Self { out_channels: None, temb_channels: Some(1280), groups: 32, eps: 1e-5, span: NormSpan::PerFrame }
    }
}

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    span: NormSpan,
    cout: usize,
}

impl ResnetBlock {
    pub fn new(g: &mut Graph, w: Weights, cin: usize, cfg: ResnetConfig) -> Result<Self> {
        let cout = cfg.out_channels.unwrap_or(cin);
        Ok(Self {
            norm1: GroupNorm::new(g, w.pp("norm1"), cin, cfg.groups, cfg.eps)?,
            conv1: Conv2d::new(g, w.pp("conv1"), cin, cout, 3, 1)?,
            time_emb_proj: match cfg.temb_channels {
                Some(temb) => Some(Linear::new(g, w.pp("time_emb_proj"), temb, cout, true)?),
                None => None,
            },
            norm2: GroupNorm::new(g, w.pp("norm2"), cout, cfg.groups, cfg.eps)?,
            conv2: Conv2d::new(g, w.pp("conv2"), cout, cout, 3, 1)?,
            conv_shortcut: if cin != cout { Some(Conv2d::new(g, w.pp("conv_shortcut"), cin, cout, 1, 1)?) } else { None },
            span: cfg.span,
            cout,
        })
    }

    /// `x`: `(B·F, Cin, H, W)`; `silu_temb`: SiLU of the time embedding, `(B, T)`, for a block
    /// with one; `frames`: the batch and frame counts, which the time embedding and norms spanning
    /// frames need.
    pub fn forward(&self, g: &mut Graph, x: &Value, silu_temb: Option<&Value>, frames: Option<&Frames>) -> Value {
        let h = self.norm1.forward(g, x, self.span, frames);
        let h = g.silu(&h);
        let mut h = self.conv1.forward(g, &h);
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, silu_temb) {
            let frames = frames.expect("the time embedding is broadcast over the frames");
            // (B, Cout) → (B·F, Cout, 1, 1): the embedding broadcasts over frames (docs/spec.md §1.1).
            let t = proj.forward(g, temb);
            let t = g.unsqueeze(&t, &[1]);
            let one = g.const_i64(&[1]);
            let expand = g.concat(&[&frames.b, &frames.f, &one], 0);
            let t = g.expand(&t, &expand);
            let t = g.reshape_to(&t, &[-1, self.cout as i64, 1, 1]);
            h = g.add(&h, &t);
        }
        let h = self.norm2.forward(g, &h, self.span, frames);
        let h = g.silu(&h);
        let h = self.conv2.forward(g, &h);
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(g, x),
            None => x.clone(),
        };
        g.add(&skip, &h)
    }
}
