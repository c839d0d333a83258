//! `UNet3DConditionModel` with motion modules (spec §1, §2.1): the SD1.5 UNet whose spatial
//! layers treat frames as batch, with a motion module after every ResNet(+transformer) layer of
//! every down and up block (and in the mid block for v2).
//!
//! Graph I/O: `sample` f32 [B,4,F,h,w], `timestep` f32 [B], `encoder_hidden_states` f32 [B,77,D]
//! → `noise_pred` f32 [B,4,F,h,w]. Activations stay `(B·F, C, H, W)`; only the motion modules and
//! v1's cross-frame GroupNorms look at the frame axis.

use animatediff_formats::arch::UnetArch;
use animatediff_formats::{ComponentWeights, LoraSet, MotionVersion};
use onnx_writer::{Dim, ElemType, Graph, Value};

use crate::error::{BuildError, Result};
use crate::motion_module::{MotionConfig, MotionModule};
use crate::nn::{Conv2d, Frames, GroupNorm, Linear, NormSpan};
use crate::resnet::ResnetBlock;
use crate::spatial_transformer::SpatialTransformer;
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
    /// v1's ResNet and output GroupNorms normalise across frames; v2/v3 per frame (spec §3.2).
    pub fn resnet_span(&self) -> NormSpan {
        if self.motion_version.per_frame_resnet_groupnorm() {
            NormSpan::PerFrame
        } else {
            NormSpan::AcrossFrames
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
}

fn dim(v: Option<usize>, name: &str) -> Dim {
    v.map(Dim::Fixed).unwrap_or_else(|| Dim::sym(name))
}

struct Layer {
    resnet: ResnetBlock,
    attention: Option<SpatialTransformer>,
    motion: MotionModule,
}

impl Layer {
    fn forward(&self, g: &mut Graph, h: &Value, temb: &Value, context: &Value, frames: &Frames) -> Value {
        let h = self.resnet.forward(g, h, temb, frames);
        let h = match &self.attention {
            Some(a) => a.forward(g, &h, context),
            None => h,
        };
        self.motion.forward(g, &h, frames)
    }
}

struct DownBlock {
    layers: Vec<Layer>,
    downsampler: Option<Conv2d>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsampler: Option<Conv2d>,
}

struct MidBlock {
    resnet0: ResnetBlock,
    attention: SpatialTransformer,
    motion: Option<MotionModule>,
    resnet1: ResnetBlock,
}

pub struct Unet3d {
    cfg: UnetConfig,
    time_linear_1: Linear,
    time_linear_2: Linear,
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
        let a = cfg.arch.clone();
        let uw = Weights::new(unet, unet_loras);
        let u = uw.w();
        let mw = Weights::new(motion, motion_loras);
        let m = mw.w();
        let groups = a.norm_num_groups;
        let span = cfg.resnet_span();
        let ch = &a.block_out_channels;
        let levels = ch.len();
        let temb = a.time_embed_dim;
        if ch.is_empty() || a.attention_levels.len() != levels {
            return Err(BuildError::Config(format!("inconsistent UNet architecture: {a:?}")));
        }

        let time_linear_1 = Linear::new(g, u.pp("time_embedding.linear_1").w(), ch[0], temb, true)?;
        let time_linear_2 = Linear::new(g, u.pp("time_embedding.linear_2").w(), temb, temb, true)?;
        let conv_in = Conv2d::new(g, u.pp("conv_in").w(), a.in_channels, ch[0], 3, 1)?;

        let transformer = |g: &mut Graph, w: Weights, c: usize| {
            SpatialTransformer::new(g, w, c, a.cross_attention_dim, a.num_attention_heads, groups, a.transformer_layers_per_block, a.use_linear_projection)
        };
        let motion_module = |g: &mut Graph, site: String, c: usize| {
            MotionModule::new(g, m.pp(format!("{site}.temporal_transformer")).w(), c, &cfg.motion)
        };

        let mut down = Vec::new();
        let mut c = ch[0];
        let mut skip_channels = vec![c];
        for (i, &cout) in ch.iter().enumerate() {
            let block = u.pp(format!("down_blocks.{i}"));
            let bw = block.w();
            let mut layers = Vec::new();
            for j in 0..a.layers_per_block {
                let resnet = ResnetBlock::new(g, bw.pp(format!("resnets.{j}")).w(), c, cout, temb, groups, span)?;
                c = cout;
                let attention = if a.attention_levels[i] { Some(transformer(g, bw.pp(format!("attentions.{j}")).w(), c)?) } else { None };
                let motion = motion_module(g, format!("down_blocks.{i}.motion_modules.{j}"), c)?;
                layers.push(Layer { resnet, attention, motion });
                skip_channels.push(c);
            }
            let downsampler = if i + 1 < levels {
                skip_channels.push(c);
                Some(Conv2d::new(g, bw.pp("downsamplers.0.conv").w(), c, c, 3, 2)?)
            } else {
                None
            };
            down.push(DownBlock { layers, downsampler });
        }

        let mid = MidBlock {
            resnet0: ResnetBlock::new(g, u.pp("mid_block.resnets.0").w(), c, c, temb, groups, span)?,
            attention: transformer(g, u.pp("mid_block.attentions.0").w(), c)?,
            motion: if cfg.motion_mid_block { Some(motion_module(g, "mid_block.motion_modules.0".into(), c)?) } else { None },
            resnet1: ResnetBlock::new(g, u.pp("mid_block.resnets.1").w(), c, c, temb, groups, span)?,
        };

        let mut up = Vec::new();
        for i in 0..levels {
            let level = levels - 1 - i;
            let cout = ch[level];
            let block = u.pp(format!("up_blocks.{i}"));
            let bw = block.w();
            let mut layers = Vec::new();
            for j in 0..=a.layers_per_block {
                let skip = skip_channels.pop().ok_or_else(|| BuildError::Config("skip stack underflow".into()))?;
                let resnet = ResnetBlock::new(g, bw.pp(format!("resnets.{j}")).w(), c + skip, cout, temb, groups, span)?;
                c = cout;
                let attention = if a.attention_levels[level] { Some(transformer(g, bw.pp(format!("attentions.{j}")).w(), c)?) } else { None };
                let motion = motion_module(g, format!("up_blocks.{i}.motion_modules.{j}"), c)?;
                layers.push(Layer { resnet, attention, motion });
            }
            let upsampler = if level > 0 { Some(Conv2d::new(g, bw.pp("upsamplers.0.conv").w(), c, c, 3, 1)?) } else { None };
            up.push(UpBlock { layers, upsampler });
        }

        let conv_norm_out = GroupNorm::new(g, u.pp("conv_norm_out").w(), ch[0], groups, 1e-5)?;
        let conv_out = Conv2d::new(g, u.pp("conv_out").w(), ch[0], a.out_channels, 3, 1)?;
        Ok(Self { cfg, time_linear_1, time_linear_2, conv_in, down, mid, up, conv_norm_out, conv_out })
    }

    /// Sinusoidal embedding `[cos | sin]` (flip_sin_to_cos, freq_shift 0, spec §1.2).
    fn timestep_embedding(&self, g: &mut Graph, t: &Value) -> Value {
        let dim = self.cfg.arch.block_out_channels[0];
        let half = dim / 2;
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

    /// Emits the whole network and declares its inputs and outputs.
    pub fn build(&self, g: &mut Graph, shapes: &UnetShapes) -> Value {
        let a = &self.cfg.arch;
        let (b, f, hd, wd) = (dim(shapes.batch, "batch"), dim(shapes.frames, "frames"), dim(shapes.height, "height"), dim(shapes.width, "width"));
        let sample = g.input("sample", ElemType::F32, &[b.clone(), Dim::Fixed(a.in_channels), f.clone(), hd.clone(), wd.clone()]);
        let timestep = g.input("timestep", ElemType::F32, &[b.clone()]);
        let context = g.input("encoder_hidden_states", ElemType::F32, &[b.clone(), Dim::Fixed(77), Dim::Fixed(a.cross_attention_dim)]);

        let frames = Frames { b: g.shape_slice(&sample, 0, 1), f: g.shape_slice(&sample, 2, 3) };
        // stays (B, 77, D), not repeated per frame: cross-attention attends a video's frames together
        let context = g.to_act(&context);

        // time embedding: (B, T), and its SiLU shared by every ResNet
        let temb = g.scoped("time_embedding", |g| {
            let e = self.timestep_embedding(g, &timestep);
            let e = self.time_linear_1.forward(g, &e);
            let e = g.silu(&e);
            self.time_linear_2.forward(g, &e)
        });
        let silu_temb = g.silu(&temb);

        // (B, C, F, H, W) → (B·F, C, H, W)
        let x = g.scoped("fold", |g| {
            let x = g.to_act(&sample);
            let x = g.transpose(&x, &[0, 2, 1, 3, 4]);
            let head = g.const_i64(&[-1, a.in_channels as i64]);
            let hw = g.shape_slice(&sample, 3, 5);
            let shape = g.concat(&[&head, &hw], 0);
            g.reshape(&x, &shape)
        });

        let mut h = self.conv_in.forward(g, &x);
        let mut skips = vec![h.clone()];
        for (i, block) in self.down.iter().enumerate() {
            h = g.scoped(&format!("down_blocks.{i}"), |g| {
                let mut h = h.clone();
                for layer in &block.layers {
                    h = layer.forward(g, &h, &silu_temb, &context, &frames);
                    skips.push(h.clone());
                }
                if let Some(d) = &block.downsampler {
                    h = d.forward(g, &h);
                    skips.push(h.clone());
                }
                h
            });
        }
        h = g.scoped("mid_block", |g| {
            let h = self.mid.resnet0.forward(g, &h, &silu_temb, &frames);
            let h = self.mid.attention.forward(g, &h, &context);
            let h = match &self.mid.motion {
                Some(m) => m.forward(g, &h, &frames),
                None => h,
            };
            self.mid.resnet1.forward(g, &h, &silu_temb, &frames)
        });
        for (i, block) in self.up.iter().enumerate() {
            h = g.scoped(&format!("up_blocks.{i}"), |g| {
                let mut h = h.clone();
                for layer in &block.layers {
                    let skip = skips.pop().expect("skip");
                    h = g.concat(&[&h, &skip], 1);
                    h = layer.forward(g, &h, &silu_temb, &context, &frames);
                }
                if let Some(u) = &block.upsampler {
                    // nearest ×2, or to the next skip's size when odd (spec §1.5)
                    let next = skips.last().expect("skip");
                    let nc = g.shape_slice(&h, 0, 2);
                    let hw = g.shape_slice(next, 2, 4);
                    let sizes = g.concat(&[&nc, &hw], 0);
                    h = g.resize_nearest(&h, &sizes);
                    h = u.forward(g, &h);
                }
                h
            });
        }
        let out = g.scoped("out", |g| {
            let h = self.conv_norm_out.forward(g, &h, self.cfg.resnet_span(), Some(&frames));
            let h = g.silu(&h);
            let h = self.conv_out.forward(g, &h);
            // (B·F, C, H, W) → (B, C, F, H, W)
            let c = g.const_i64(&[a.out_channels as i64]);
            let hw = g.shape_slice(&h, 2, 4);
            let shape = g.concat(&[&frames.b, &frames.f, &c, &hw], 0);
            let h = g.reshape(&h, &shape);
            let h = g.transpose(&h, &[0, 2, 1, 3, 4]);
            g.to_f32(&h)
        });
        g.output(&out, "noise_pred", ElemType::F32, &[b, Dim::Fixed(a.out_channels), f, hd, wd]);
        out
    }
}
