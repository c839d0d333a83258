//! `UNet3DConditionModel` with motion modules (docs/spec.md §1, §2.1): the SD1.5 UNet whose spatial
//! layers treat frames as batch, with a motion module after every ResNet(+transformer) layer of
//! every down and up block (and in the mid block for v2).
//!
//! Graph I/O: `sample` f32 [B,4,F,h,w], `timestep` f32 [B], `encoder_hidden_states` f32
//! [B or B·F, 77·chunks, D] (one context per video, or one per frame: prompt travel),
//! with [`UnetShapes::motion_windows`] also `motion_windows` i64 [W, L] and `motion_fuse` f32
//! [F, W, L] (the motion modules' windows, see `motion_module`; one window `[0..F]` and the
//! identity for the plain module) → `noise_pred` f32
//! [B,4,F,h,w]. Activations stay `(B·F, C, H, W)`; only the motion modules and v1's cross-frame
//! GroupNorms look at the frame axis.

use animatediff_formats::arch::UnetArch;
use animatediff_formats::{ComponentWeights, LoraSet, MotionVersion};
use onnx_writer::{Dim, ElemType, Graph, Value};

use crate::error::{BuildError, Result};
use crate::motion_module::{MotionConfig, MotionModule, MotionWindows};
use crate::nn::{Conv2d, Frames, GroupNorm, Linear, NormSpan, Upsample};
use crate::resnet::{ResnetBlock, ResnetConfig};
use crate::spatial_transformer::{SpatialTransformer, SpatialTransformerConfig};
use crate::weights::Weights;

/// What the UNet graph needs beyond the spatial architecture.
#[derive(Clone, Debug)]
pub struct UnetConfig {
    pub arch: UnetArch,
    pub motion_version: MotionVersion,
    pub motion: MotionConfig,
    pub motion_mid_block: bool,
}

impl UnetConfig {
    /// SD1.5 with a released motion module of `motion_version` (with or without a mid-block
    /// motion module, which the checkpoint's keys tell).
    pub fn sd15(motion_version: MotionVersion, motion_mid_block: bool) -> Self {
        Self { arch: UnetArch::default(), motion_version, motion: MotionConfig::sd15(motion_version), motion_mid_block }
    }

    /// v1's ResNet and output GroupNorms normalise across frames; v2/v3 per frame (docs/spec.md §3.2).
    pub fn resnet_span(&self) -> NormSpan {
        if self.motion_version.per_frame_resnet_groupnorm() {
            NormSpan::PerFrame
        } else {
            NormSpan::AcrossFrames
        }
    }

    fn resnet(&self, out_channels: usize) -> ResnetConfig {
        let a = &self.arch;
        ResnetConfig { out_channels: Some(out_channels), temb_channels: Some(a.time_embed_dim), groups: a.norm_num_groups, eps: 1e-5, span: self.resnet_span() }
    }

    fn transformer(&self) -> SpatialTransformerConfig {
        let a = &self.arch;
        SpatialTransformerConfig {
            depth: a.transformer_layers_per_block,
            heads: a.num_attention_heads,
            groups: a.norm_num_groups,
            context_dim: a.cross_attention_dim,
            use_linear_projection: a.use_linear_projection,
        }
    }
}

/// Fixed or symbolic graph dimensions.
#[derive(Clone, Debug, Default)]
pub struct UnetShapes {
    pub batch: Option<usize>,
    pub frames: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// Whether the motion modules take their attention windows as inputs (`motion_windows`,
    /// `motion_fuse`: FreeNoise); without, they attend over every frame with no window operations.
    pub motion_windows: bool,
}

/// What every layer is conditioned on: the SiLU of the time embedding `(B, T)`, the text
/// `(B, 77·chunks, D)` (one per video, not repeated per frame) or `(B·F, 77·chunks, D)` (one per
/// frame), the batch and frame counts, and the motion modules' windows.
struct Conditioning {
    silu_temb: Value,
    context: Value,
    frames: Frames,
    windows: Option<MotionWindows>,
}

/// The weights every block reads besides the UNet's own: the motion modules', and the
/// hyper-parameters.
struct Parts<'a> {
    cfg: &'a UnetConfig,
    motion: Weights<'a>,
}

impl Parts<'_> {
    fn motion_module(&self, g: &mut Graph, site: &str, c: usize) -> Result<MotionModule> {
        MotionModule::new(g, self.motion.pp(format!("{site}.temporal_transformer")), c, &self.cfg.motion)
    }

    /// Layer `j` of the block `site` (`w` its UNet weights): ResNet, spatial transformer when
    /// `attention`, motion module.
    fn layer(&self, g: &mut Graph, w: &Weights, site: &str, j: usize, (cin, cout): (usize, usize), attention: bool) -> Result<Layer> {
        let resnet = ResnetBlock::new(g, w.pp(format!("resnets.{j}")), cin, self.cfg.resnet(cout))?;
        let attention = if attention { Some(SpatialTransformer::new(g, w.pp(format!("attentions.{j}")), cout, &self.cfg.transformer())?) } else { None };
        let motion = self.motion_module(g, &format!("{site}.motion_modules.{j}"), cout)?;
        Ok(Layer { resnet, attention, motion })
    }
}

struct Layer {
    resnet: ResnetBlock,
    attention: Option<SpatialTransformer>,
    motion: MotionModule,
}

impl Layer {
    fn forward(&self, g: &mut Graph, h: &Value, cond: &Conditioning) -> Value {
        let h = self.resnet.forward(g, h, Some(&cond.silu_temb), Some(&cond.frames));
        let h = match &self.attention {
            Some(a) => a.forward(g, &h, &cond.context),
            None => h,
        };
        self.motion.forward(g, &h, &cond.frames, cond.windows.as_ref())
    }
}

/// `time_embedding`: the sinusoidal embedding of the timestep through two Linear layers.
struct TimeEmbedding {
    channels: usize,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimeEmbedding {
    fn new(g: &mut Graph, w: Weights, channels: usize, temb: usize) -> Result<Self> {
        Ok(Self {
            channels,
            linear_1: Linear::new(g, w.pp("linear_1"), channels, temb, true)?,
            linear_2: Linear::new(g, w.pp("linear_2"), temb, temb, true)?,
        })
    }

    /// `t`: `(B,)` → `(B, T)`.
    fn forward(&self, g: &mut Graph, t: &Value) -> Value {
        let e = self.sinusoidal(g, t);
        let e = self.linear_1.forward(g, &e);
        let e = g.silu(&e);
        self.linear_2.forward(g, &e)
    }

    /// Sinusoidal embedding `[cos | sin]` (flip_sin_to_cos, freq_shift 0, docs/spec.md §1.2).
    fn sinusoidal(&self, g: &mut Graph, t: &Value) -> Value {
        let half = self.channels / 2;
        let k = -(10000f32).ln();
        let freqs: Vec<f32> = (0..half).map(|i| (k * i as f32 / half as f32).exp()).collect();
        let freqs = g.const_f32(&[1, half], &freqs);
        let t = g.unsqueeze(t, &[1]);
        let args = g.mul(&t, &freqs);
        let cos = g.cos(&args);
        let sin = g.sin(&args);
        let e = g.concat(&[&cos, &sin], 1);
        g.to_act(&e)
    }
}

/// `down_blocks.{i}`: layers, then a stride-2 conv except at the last level.
struct DownBlock {
    layers: Vec<Layer>,
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    /// Level `i` from `c` channels (updated to its output's); pushes the channels of the skips it
    /// leaves for the up blocks.
    fn new(g: &mut Graph, parts: &Parts, w: Weights, i: usize, c: &mut usize, skip_channels: &mut Vec<usize>) -> Result<Self> {
        let a = &parts.cfg.arch;
        let cout = a.block_out_channels[i];
        let site = format!("down_blocks.{i}");
        let mut layers = Vec::new();
        for j in 0..a.layers_per_block {
            layers.push(parts.layer(g, &w, &site, j, (*c, cout), a.attention_levels[i])?);
            *c = cout;
            skip_channels.push(cout);
        }
        let downsampler = if i + 1 < a.block_out_channels.len() {
            skip_channels.push(cout);
            Some(Conv2d::new(g, w.pp("downsamplers.0.conv"), cout, cout, 3, 2)?)
        } else {
            None
        };
        Ok(Self { layers, downsampler })
    }

    /// Pushes every layer's output (and the downsampler's) onto `skips`.
    fn forward(&self, g: &mut Graph, x: &Value, cond: &Conditioning, skips: &mut Vec<Value>) -> Value {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(g, &h, cond);
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(g, &h);
            skips.push(h.clone());
        }
        h
    }
}

/// `mid_block`: ResNet, spatial transformer, (v2's motion module,) ResNet.
struct MidBlock {
    resnet0: ResnetBlock,
    attention: SpatialTransformer,
    motion: Option<MotionModule>,
    resnet1: ResnetBlock,
}

impl MidBlock {
    fn new(g: &mut Graph, parts: &Parts, w: Weights, c: usize) -> Result<Self> {
        let cfg = parts.cfg;
        Ok(Self {
            resnet0: ResnetBlock::new(g, w.pp("resnets.0"), c, cfg.resnet(c))?,
            attention: SpatialTransformer::new(g, w.pp("attentions.0"), c, &cfg.transformer())?,
            motion: if cfg.motion_mid_block { Some(parts.motion_module(g, "mid_block.motion_modules.0", c)?) } else { None },
            resnet1: ResnetBlock::new(g, w.pp("resnets.1"), c, cfg.resnet(c))?,
        })
    }

    fn forward(&self, g: &mut Graph, x: &Value, cond: &Conditioning) -> Value {
        let h = self.resnet0.forward(g, x, Some(&cond.silu_temb), Some(&cond.frames));
        let h = self.attention.forward(g, &h, &cond.context);
        let h = match &self.motion {
            Some(m) => m.forward(g, &h, &cond.frames, cond.windows.as_ref()),
            None => h,
        };
        self.resnet1.forward(g, &h, Some(&cond.silu_temb), Some(&cond.frames))
    }
}

/// `up_blocks.{i}`: layers, each on its input concatenated with a skip, then an upsampling to
/// the next skip's size except at the last level.
struct UpBlock {
    layers: Vec<Layer>,
    upsampler: Option<Upsample>,
}

impl UpBlock {
    /// Block `i` (mirroring down level `levels - 1 - i`) from `c` channels (updated to its
    /// output's), popping the channels of the skips it consumes.
    fn new(g: &mut Graph, parts: &Parts, w: Weights, i: usize, c: &mut usize, skip_channels: &mut Vec<usize>) -> Result<Self> {
        let a = &parts.cfg.arch;
        let level = a.block_out_channels.len() - 1 - i;
        let cout = a.block_out_channels[level];
        let site = format!("up_blocks.{i}");
        let mut layers = Vec::new();
        for j in 0..=a.layers_per_block {
            let skip = skip_channels.pop().ok_or_else(|| BuildError::Config("skip stack underflow".into()))?;
            layers.push(parts.layer(g, &w, &site, j, (*c + skip, cout), a.attention_levels[level])?);
            *c = cout;
        }
        let upsampler = if level > 0 { Some(Upsample::new(g, w.pp("upsamplers.0"), cout)?) } else { None };
        Ok(Self { layers, upsampler })
    }

    /// Pops the skip of each layer from `skips`.
    fn forward(&self, g: &mut Graph, x: &Value, cond: &Conditioning, skips: &mut Vec<Value>) -> Value {
        let mut h = x.clone();
        for layer in &self.layers {
            let skip = skips.pop().expect("skip");
            h = g.concat(&[&h, &skip], 1);
            h = layer.forward(g, &h, cond);
        }
        match &self.upsampler {
            Some(u) => u.forward(g, &h, Some(skips.last().expect("skip"))),
            None => h,
        }
    }
}

pub struct Unet3d {
    cfg: UnetConfig,
    time_embedding: TimeEmbedding,
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Unet3d {
    /// Writes every weight: spatial ones from `unet` (with `unet_loras`), motion ones from
    /// `motion` (with `motion_loras`).
    pub fn new(
        g: &mut Graph,
        cfg: UnetConfig,
        unet: &ComponentWeights,
        unet_loras: Option<&LoraSet>,
        motion: &ComponentWeights,
        motion_loras: Option<&LoraSet>,
    ) -> Result<Self> {
        let a = &cfg.arch;
        let ch = &a.block_out_channels;
        if ch.is_empty() || a.attention_levels.len() != ch.len() {
            return Err(BuildError::Config(format!("inconsistent UNet architecture: {a:?}")));
        }
        let u = Weights::new(unet, unet_loras);
        let parts = Parts { cfg: &cfg, motion: Weights::new(motion, motion_loras) };
        let time_embedding = TimeEmbedding::new(g, u.pp("time_embedding"), ch[0], a.time_embed_dim)?;
        let conv_in = Conv2d::new(g, u.pp("conv_in"), a.in_channels, ch[0], 3, 1)?;
        let mut c = ch[0];
        let mut skip_channels = vec![c];
        let mut down = Vec::new();
        for i in 0..ch.len() {
            down.push(DownBlock::new(g, &parts, u.pp(format!("down_blocks.{i}")), i, &mut c, &mut skip_channels)?);
        }
        let mid = MidBlock::new(g, &parts, u.pp("mid_block"), c)?;
        let mut up = Vec::new();
        for i in 0..ch.len() {
            up.push(UpBlock::new(g, &parts, u.pp(format!("up_blocks.{i}")), i, &mut c, &mut skip_channels)?);
        }
        let conv_norm_out = GroupNorm::new(g, u.pp("conv_norm_out"), ch[0], a.norm_num_groups, 1e-5)?;
        let conv_out = Conv2d::new(g, u.pp("conv_out"), ch[0], a.out_channels, 3, 1)?;
        Ok(Self { cfg, time_embedding, conv_in, down, mid, up, conv_norm_out, conv_out })
    }

    /// Emits the whole network and declares its inputs and outputs.
    pub fn build(&self, g: &mut Graph, shapes: &UnetShapes) -> Value {
        let a = &self.cfg.arch;
        let b = Dim::fixed_or_sym(shapes.batch, "batch");
        let f = Dim::fixed_or_sym(shapes.frames, "frames");
        let (hd, wd) = (Dim::fixed_or_sym(shapes.height, "height"), Dim::fixed_or_sym(shapes.width, "width"));
        let sample = g.input("sample", ElemType::F32, &[b.clone(), Dim::Fixed(a.in_channels), f.clone(), hd.clone(), wd.clone()]);
        let timestep = g.input("timestep", ElemType::F32, std::slice::from_ref(&b));
        // 77 tokens per prompt chunk: one chunk, or several for long prompts (77 × chunks); one
        // context per video (B) or per frame (B·F)
        let context = g.input("encoder_hidden_states", ElemType::F32, &[Dim::sym("context_batch"), Dim::sym("tokens"), Dim::Fixed(a.cross_attention_dim)]);
        let windows = shapes.motion_windows.then(|| {
            let frames = g.input("motion_windows", ElemType::I64, &[Dim::sym("windows"), Dim::sym("window_frames")]);
            let fuse = g.input("motion_fuse", ElemType::F32, &[f.clone(), Dim::sym("windows"), Dim::sym("window_frames")]);
            (frames, fuse)
        });

        let frames = Frames { b: g.shape_slice(&sample, 0, 1), f: g.shape_slice(&sample, 2, 3) };
        // stays (B, 77·chunks, D), not repeated per frame: cross-attention attends a video's frames
        // together (or (B·F, …): each frame its own)
        let context = g.to_act(&context);
        let windows = windows.map(|(frames, fuse)| MotionWindows::new(g, frames, &fuse));
        // time embedding: (B, T), and its SiLU shared by every ResNet
        let temb = g.scoped("time_embedding", |g| self.time_embedding.forward(g, &timestep));
        let silu_temb = g.silu(&temb);
        let x = g.scoped("fold", |g| self.fold(g, &sample));
        let cond = Conditioning { silu_temb, context, frames, windows };

        let mut h = self.conv_in.forward(g, &x);
        let mut skips = vec![h.clone()];
        for (i, block) in self.down.iter().enumerate() {
            h = g.scoped(&format!("down_blocks.{i}"), |g| block.forward(g, &h, &cond, &mut skips));
        }
        h = g.scoped("mid_block", |g| self.mid.forward(g, &h, &cond));
        for (i, block) in self.up.iter().enumerate() {
            h = g.scoped(&format!("up_blocks.{i}"), |g| block.forward(g, &h, &cond, &mut skips));
        }
        let out = g.scoped("out", |g| self.out(g, &h, &cond.frames));
        g.output(&out, "noise_pred", ElemType::F32, &[b, Dim::Fixed(a.out_channels), f, hd, wd]);
        out
    }

    /// `sample` `(B, C, F, H, W)` → `(B·F, C, H, W)` in the activation type.
    fn fold(&self, g: &mut Graph, sample: &Value) -> Value {
        let x = g.to_act(sample);
        let x = g.transpose(&x, &[0, 2, 1, 3, 4]);
        let head = g.const_i64(&[-1, self.cfg.arch.in_channels as i64]);
        let hw = g.shape_slice(sample, 3, 5);
        let shape = g.concat(&[&head, &hw], 0);
        g.reshape(&x, &shape)
    }

    /// Output norm and conv, then `(B·F, C, H, W)` → `(B, C, F, H, W)` in f32.
    fn out(&self, g: &mut Graph, h: &Value, frames: &Frames) -> Value {
        let h = self.conv_norm_out.forward(g, h, self.cfg.resnet_span(), Some(frames));
        let h = g.silu(&h);
        let h = self.conv_out.forward(g, &h);
        let c = g.const_i64(&[self.cfg.arch.out_channels as i64]);
        let hw = g.shape_slice(&h, 2, 4);
        let shape = g.concat(&[&frames.b, &frames.f, &c, &hw], 0);
        let h = g.reshape(&h, &shape);
        let h = g.transpose(&h, &[0, 2, 1, 3, 4]);
        g.to_f32(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layers' SD1.5 defaults agree with what the SD1.5 UNet configuration gives them.
    #[test]
    fn sd15_defaults_agree() {
        let cfg = UnetConfig::sd15(MotionVersion::V2, true);
        assert_eq!(cfg.transformer(), SpatialTransformerConfig::default());
        assert_eq!(cfg.resnet(320), ResnetConfig { out_channels: Some(320), ..Default::default() });
        assert_eq!(cfg.motion, MotionConfig { heads: 8, groups: 32, max_frames: 32 });
        let v1 = UnetConfig::sd15(MotionVersion::V1, false);
        assert_eq!(v1.resnet(320).span, NormSpan::AcrossFrames);
        assert_eq!(v1.motion.max_frames, 24);
    }
}
