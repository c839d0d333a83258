//! `ResnetBlock3D` (spec §1.3): GroupNorm → SiLU → conv → + time embedding → GroupNorm → SiLU →
//! conv, plus the (1×1-conv) shortcut. Its GroupNorms span all frames for v1 (spec §3.2).

use onnx_writer::{Graph, Value};

use crate::error::Result;
use crate::nn::{Conv2d, Frames, GroupNorm, Linear, NormSpan};
use crate::weights::Weights;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    span: NormSpan,
    cout: usize,
}

impl ResnetBlock {
    pub fn new(g: &mut Graph, w: Weights, cin: usize, cout: usize, temb: usize, groups: usize, span: NormSpan) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(g, w.pp("norm1").w(), cin, groups, 1e-5)?,
            conv1: Conv2d::new(g, w.pp("conv1").w(), cin, cout, 3, 1)?,
            time_emb_proj: Linear::new(g, w.pp("time_emb_proj").w(), temb, cout, true)?,
            norm2: GroupNorm::new(g, w.pp("norm2").w(), cout, groups, 1e-5)?,
            conv2: Conv2d::new(g, w.pp("conv2").w(), cout, cout, 3, 1)?,
            conv_shortcut: if cin != cout { Some(Conv2d::new(g, w.pp("conv_shortcut").w(), cin, cout, 1, 1)?) } else { None },
            span,
            cout,
        })
    }

    /// `x`: `(B·F, Cin, H, W)`; `silu_temb`: SiLU of the time embedding, `(B, T)`.
    pub fn forward(&self, g: &mut Graph, x: &Value, silu_temb: &Value, frames: &Frames) -> Value {
        let h = self.norm1.forward(g, x, self.span, Some(frames));
        let h = g.silu(&h);
        let h = self.conv1.forward(g, &h);
        // (B, Cout) → (B·F, Cout, 1, 1): the embedding broadcasts over frames (spec §1.1).
        let t = self.time_emb_proj.forward(g, silu_temb);
        let t = g.unsqueeze(&t, &[1]);
        let one = g.const_i64(&[1]);
        let expand = g.concat(&[&frames.b, &frames.f, &one], 0);
        let t = g.expand(&t, &expand);
        let t = g.reshape_to(&t, &[-1, self.cout as i64, 1, 1]);
        let h = g.add(&h, &t);
        let h = self.norm2.forward(g, &h, self.span, Some(frames));
        let h = g.silu(&h);
        let h = self.conv2.forward(g, &h);
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(g, x),
            None => x.clone(),
        };
        g.add(&skip, &h)
    }
}
