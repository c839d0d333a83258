//! The AnimateDiff sampling loop (docs/spec.md §8.7) over an artifact's three graphs:
//!
//! ```text
//! ctx = cat([E(negative), E(prompt)])                 uncond first
//! for t in timesteps:  ε_u, ε_c = UNet(cat([x, x]), t, ctx);  ε = ε_u + s·(ε_c − ε_u);  x = DDIM(x, ε, t)
//! frames = VAE(x, one frame at a time);  u8 = trunc(255 · clamp(x/2 + 0.5, 0, 1))
//! ```

use crate::artifact::Artifact;
use crate::context::{interpolate_keyframes, shuffle_context, ContextMethod, ContextOptions, Fusion, MAX_VIDEO_FRAMES};
use crate::error::{Error, Result, Setting};
use crate::runtime::Runtime;
use crate::session::{GraphSession, InputSpec, Tensor};
use crate::noise::NoiseSource;
use crate::sampler::{Sampler, SamplerOptions};
use crate::prompt::{emphasize, Chunk, PromptSyntax, TokenizedPrompt, MAX_CHUNKS};
use crate::tokenizer::{ClipTokenizer, BOS, EOS, MAX_LENGTH};

/// One RGB frame, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width · height · 3` bytes: R, G, B per pixel, rows top to bottom.
    pub rgb: Vec<u8>,
}

/// Video size: frames and pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoShape {
    /// Frames: 1 to the motion module's maximum ([`Artifact::max_frames`]), or to
    /// [`MAX_VIDEO_FRAMES`] with context windows ([`VideoShape::check_with`]).
    pub frames: usize,
    /// Pixels, a multiple of 8.
    pub height: usize,
    /// Pixels, a multiple of 8.
    pub width: usize,
}

/// The largest latent side, 256 (2048 pixels): four times SD1.5's trained 512 on each side. It
/// is the largest a big GPU with memory-efficient attention can still run (one frame's first
/// UNet level is then 320 × 65536 values per batch item, and the VAE decoder's last level 2048²
/// × 128), and it keeps every tensor size far from overflow. Beyond it a run could only fail,
/// after minutes: 8192² crashes inside tract, 1048576² asks for terabytes.
pub const MAX_LATENT_SIDE: usize = 256;

/// The most pixels a video may have, frames × width × height: 2³² (1024 frames of 2048², 16384
/// of 512²; the decoded frames, 3 bytes a pixel, are kept until the output is written, 12.9 GB
/// at this bound). With [`crate::MAX_VIDEO_FRAMES`] it keeps a long video's allocations bounded.
pub const MAX_VIDEO_PIXELS: u64 = 1 << 32;

impl VideoShape {
    /// Values in the latents `(1, channels, frames, height / 8, width / 8)` of this video
    /// (saturating: a shape that passed [`VideoShape::check`] never comes near).
    pub fn latent_len(&self, channels: usize) -> usize {
        [self.frames, self.height / 8, self.width / 8].iter().fold(channels, |n, &d| n.saturating_mul(d))
    }

    /// Checks the shape against `artifact` before anything is allocated or loaded for it:
    /// frames 1 to the motion module's maximum (and the artifact's fixed count, if it has one),
    /// width and height positive multiples of 8 up to 8 × [`MAX_LATENT_SIDE`] pixels (and the
    /// artifact's fixed size, if it has one).
    pub fn check(&self, artifact: &Artifact) -> Result<()> {
        self.check_with(artifact, None)
    }

    /// [`check`](Self::check) for a video sampled with `context` windows: then up to
    /// [`MAX_VIDEO_FRAMES`] frames, the windows no longer than the motion module's maximum, and
    /// the UNet's frames (one window's, or every frame's for FreeNoise) the artifact's fixed count
    /// if it has one. Without windows, more frames than the motion module takes is
    /// [`Error::FramesNeedContext`].
    pub fn check_with(&self, artifact: &Artifact, context: Option<&ContextOptions>) -> Result<()> {
        let VideoShape { frames, height, width } = *self;
        let most = MAX_LATENT_SIDE * 8;
        for (setting, v) in [(Setting::Width, width), (Setting::Height, height)] {
            if v == 0 || v % 8 != 0 || v > most {
                let reason = format!("expected a multiple of 8 (the VAE's factor) from 8 to {most} pixels");
                return Err(Error::Invalid { setting, value: v.to_string(), reason });
            }
        }
        let max = artifact.max_frames();
        if frames == 0 || (context.is_some() && frames > MAX_VIDEO_FRAMES) {
            let most = if context.is_some() { MAX_VIDEO_FRAMES } else { max };
            let reason = format!("expected 1 to {most} frames");
            return Err(Error::Invalid { setting: Setting::Frames, value: frames.to_string(), reason });
        }
        let pixels = (frames as u64).saturating_mul(width as u64).saturating_mul(height as u64);
        if pixels > MAX_VIDEO_PIXELS {
            let reason = format!(
                "{frames} frames of {width}x{height} are {pixels} pixels; a video holds at most {MAX_VIDEO_PIXELS} (1024 frames of 2048x2048, {} frames of 512x512): its frames are kept in memory until written",
                MAX_VIDEO_PIXELS / (512 * 512)
            );
            return Err(Error::Invalid { setting: Setting::Frames, value: frames.to_string(), reason });
        }
        let unet_frames = match context {
            None if frames > max => return Err(Error::FramesNeedContext { frames, max, version: artifact.motion_version().to_string() }),
            None => frames,
            Some(c) => {
                c.check(max)?;
                if c.method == ContextMethod::FreeNoise && !artifact.motion_windows() {
                    let reason = "this artifact's UNet has no motion-window inputs: rebuild it with `build-graph --motion-windows` (left out by default, so that runs without FreeNoise pay nothing for them), or use uniform".into();
                    return Err(Error::Invalid { setting: Setting::Context, value: c.method.to_string(), reason });
                }
                match c.method {
                    ContextMethod::Uniform => c.window_len(frames),
                    ContextMethod::FreeNoise => frames,
                }
            }
        };
        if let Some(f) = artifact.fixed_frames() {
            if f != unet_frames {
                let reason = format!("the model was built for exactly {f} frames at once (its manifest's fixed frame count)");
                return Err(Error::Invalid { setting: Setting::Frames, value: frames.to_string(), reason });
            }
        }
        if let Some((fh, fw)) = artifact.fixed_latent_hw() {
            if (fh, fw) != (height / 8, width / 8) {
                return Err(Error::Input(format!(
                    "video size {width}x{height}: the model was built for exactly {}x{} pixels (its manifest's fixed size)",
                    fw * 8,
                    fh * 8
                )));
            }
        }
        Ok(())
    }
}

/// How a video is sampled: the sampler and its options, the steps and the guidance scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// The sampler ([`SamplerOptions::default`]: DDIM as the official code).
    pub sampler: SamplerOptions,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (active above 1).
    pub guidance: f32,
}

impl Sampling {
    /// The official sampling: DDIM, leading spacing, η = 0.
    pub fn ddim(steps: usize, guidance: f32) -> Self {
        Self { sampler: SamplerOptions::default(), steps, guidance }
    }

    /// The sampler's schedule on `artifact`'s scheduler configuration.
    pub fn sampler(&self, artifact: &Artifact) -> Result<Sampler> {
        Sampler::new(artifact.scheduler(), self.sampler, self.steps)
    }
}

/// Checks [`Pipeline::sample_with`]'s settings against `artifact` before any graph is loaded:
/// the sampler and its options ([`Sampler::new`]: steps from 1 to what the sampler and the
/// scheduler allow, options the sampler has), `guidance` a finite number.
pub fn check_sampling(artifact: &Artifact, sampling: &Sampling) -> Result<()> {
    checked_sampler(artifact, sampling).map(drop)
}

/// [`check_sampling`]'s checks, returning the sampler they built.
fn checked_sampler(artifact: &Artifact, sampling: &Sampling) -> Result<Sampler> {
    let sampler = sampling.sampler(artifact)?;
    if !sampling.guidance.is_finite() {
        let reason = "expected a finite number (guidance is active above 1; 7.5 is usual)".into();
        return Err(Error::Invalid { setting: Setting::Guidance, value: sampling.guidance.to_string(), reason });
    }
    Ok(sampler)
}

/// The text embeddings a video is sampled with: the negative prompt's, one per video, and the
/// prompt's, one per video ([`Pipeline::encode_prompts`]) or one per frame (prompt travel,
/// [`Pipeline::encode_travel`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TextConditioning {
    /// The context length: 77 per prompt chunk.
    pub tokens: usize,
    /// The negative prompt's embeddings `(tokens, D)`.
    pub negative: Vec<f32>,
    /// The prompt's embeddings: `(tokens, D)`, or `(frames, tokens, D)` when `per_frame`.
    pub prompt: Vec<f32>,
    /// Whether `prompt` holds one context per frame.
    pub per_frame: bool,
}

impl TextConditioning {
    /// From `(2, tokens, D)` embeddings, negative first (what [`Pipeline::encode_prompts`] returns).
    pub fn from_pair(artifact: &Artifact, context: &[f32]) -> Result<Self> {
        let tokens = context_tokens(artifact, context)?;
        let (negative, prompt) = context.split_at(context.len() / 2);
        Ok(Self { tokens, negative: negative.to_vec(), prompt: prompt.to_vec(), per_frame: false })
    }

    /// The UNet's `encoder_hidden_states` for the frames `frames` of a video, CFG batch 2:
    /// `(2, T, D)` with one context per video, `(2·frames, T, D)` with one per frame (the negative
    /// repeated, then each frame's prompt).
    fn unet_context(&self, frames: &[usize]) -> (Vec<usize>, Vec<f32>) {
        let row = self.negative.len();
        let d = row / self.tokens.max(1);
        if !self.per_frame {
            let data = [&self.negative[..], &self.prompt[..]].concat();
            return (vec![2, self.tokens, d], data);
        }
        let mut data = Vec::with_capacity(2 * frames.len() * row);
        frames.iter().for_each(|_| data.extend_from_slice(&self.negative));
        frames.iter().for_each(|&f| data.extend_from_slice(&self.prompt[f * row..(f + 1) * row]));
        (vec![2 * frames.len(), self.tokens, d], data)
    }
}

/// [`Pipeline::sample_conditioned`]'s arguments: `latents` of `shape`'s length and finite, `text`
/// of the artifact's width (and one context per frame only where the UNet takes it),
/// `sampling` as [`check_sampling`] says; returns the sampler.
fn check_sample_inputs(artifact: &Artifact, shape: VideoShape, text: &TextConditioning, latents: &[f32], sampling: &Sampling) -> Result<Sampler> {
    let c = artifact.latent_channels();
    let n = shape.latent_len(c);
    if latents.len() != n {
        return Err(Error::Input(format!("initial latents hold {} values, expected {n} (1×{c}×{}×{}×{})", latents.len(), shape.frames, shape.height / 8, shape.width / 8)));
    }
    let sampler = checked_sampler(artifact, sampling)?;
    if let Some(at) = latents.iter().position(|v| !v.is_finite()) {
        let value = format!("[{at}] = {}", latents[at]);
        return Err(Error::Invalid { setting: Setting::Latents, value, reason: "expected finite numbers only".into() });
    }
    let d = artifact.context_dim();
    let row = text.tokens * d;
    check_tokens(artifact, text.tokens)?;
    let rows = if text.per_frame { shape.frames } else { 1 };
    if text.negative.len() != row || text.prompt.len() != rows * row {
        return Err(Error::Input(format!(
            "text embeddings hold {} + {} values, expected {row} for the negative prompt and {rows} × {row} for the prompt ({} tokens × {d})",
            text.negative.len(),
            text.prompt.len(),
            text.tokens
        )));
    }
    if text.per_frame && !artifact.per_frame_context() {
        let reason = "this artifact's UNet takes one text context per video (it was built before prompt travel); rebuild it with build-graph".into();
        return Err(Error::Invalid { setting: Setting::Keyframes, value: "one context per frame".into(), reason });
    }
    Ok(sampler)
}

/// The sequence length of `context` `(2, 77 × chunks, D)`: 77 per prompt chunk, at most
/// [`MAX_CHUNKS`] chunks, and what the artifact's UNet takes (one that was built before long
/// prompts takes 77 only).
fn context_tokens(artifact: &Artifact, context: &[f32]) -> Result<usize> {
    let d = artifact.context_dim();
    let chunk = 2 * MAX_LENGTH * d;
    if context.is_empty() || !context.len().is_multiple_of(chunk) || context.len() / chunk > MAX_CHUNKS {
        return Err(Error::Input(format!(
            "text embeddings hold {} values, expected 2×77×{d} per prompt chunk, 1 to {MAX_CHUNKS} chunks (from Pipeline::encode or encode_prompts)",
            context.len()
        )));
    }
    let tokens = context.len() / (2 * d);
    check_tokens(artifact, tokens)?;
    Ok(tokens)
}

/// A context of `tokens`: 77 per prompt chunk, 1 to [`MAX_CHUNKS`] chunks, and what the artifact's
/// UNet takes (one that was built before long prompts takes 77 only).
fn check_tokens(artifact: &Artifact, tokens: usize) -> Result<()> {
    if tokens == 0 || !tokens.is_multiple_of(MAX_LENGTH) || tokens / MAX_LENGTH > MAX_CHUNKS {
        return Err(Error::Input(format!("a context of {tokens} tokens: expected 77 per prompt chunk, 1 to {MAX_CHUNKS} chunks")));
    }
    match artifact.manifest.graphs.unet.inputs.get(2).and_then(|s| s.shape.get(1)).and_then(|d| d.fixed()) {
        Some(n) if n != tokens => Err(Error::Input(format!(
            "the prompt needs {} chunks of 77 tokens, but this artifact's UNet takes exactly {n} context tokens (it was built before long prompts and BREAK; rebuild it with build-graph, or shorten the prompt to 75 tokens)",
            tokens / MAX_LENGTH
        ))),
        _ => Ok(()),
    }
}

/// Checks a CLIP skip against `artifact`: 1 (the last layer) to the text encoder's depth, and
/// above 1 only where the text encoder exposes its layers (`hidden_states`; artifacts built before
/// CLIP skip existed do not).
pub fn check_clip_skip(artifact: &Artifact, clip_skip: usize) -> Result<()> {
    let layers = artifact.manifest.architecture.text_encoder.num_hidden_layers;
    let invalid = |reason: String| Err(Error::Invalid { setting: Setting::ClipSkip, value: clip_skip.to_string(), reason });
    if clip_skip == 0 || clip_skip > layers {
        return invalid(format!("expected 1 (the last layer) to {layers}, the text encoder's depth; 2 is the usual for anime models"));
    }
    let exposed = artifact.manifest.graphs.text_encoder.outputs.iter().any(|o| o.name == "hidden_states");
    if clip_skip > 1 && !exposed {
        return invalid("this artifact's text encoder gives its last layer only (it was built before CLIP skip); rebuild it with build-graph".into());
    }
    Ok(())
}

/// An artifact's three graphs loaded for one video shape, with its tokenizer and scheduler: text
/// encoding ([`encode`](Self::encode)), denoising ([`sample`](Self::sample)) and decoding
/// ([`decode`](Self::decode)).
pub struct Pipeline {
    /// The artifact the graphs come from.
    pub artifact: Artifact,
    /// The video shape the graphs were loaded for.
    pub shape: VideoShape,
    /// How well the artifact's attention form fits the provider and size (see `attention_fit`).
    pub warnings: Vec<String>,
    runtime: Runtime,
    tokenizer: ClipTokenizer,
    text_encoder: Box<dyn GraphSession>,
    unet: Box<dyn GraphSession>,
    /// The input shapes the UNet was loaded for.
    unet_key: UnetKey,
    /// Context windows, if the video is sampled with them.
    context: Option<ContextOptions>,
    vae: Box<dyn GraphSession>,
}

/// How [`Pipeline::load_with`] loads the UNet: for a context of `tokens` (77 per prompt chunk),
/// with context windows or none, one text context per video or per frame. Sampling with other
/// settings reloads it (tract optimises a graph for its input shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplePlan {
    /// The context length: 77 × prompt chunks.
    pub tokens: usize,
    /// Context windows ([`Pipeline::set_context`]).
    pub context: Option<ContextOptions>,
    /// One text context per frame (prompt travel).
    pub per_frame: bool,
}

impl Default for SamplePlan {
    fn default() -> Self {
        Self { tokens: MAX_LENGTH, context: None, per_frame: false }
    }
}

/// The shapes of the UNet's inputs: frames per run, context length and batch, motion windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UnetKey {
    frames: usize,
    tokens: usize,
    per_frame: bool,
    /// (windows, frames per window) of `motion_windows`.
    windows: (usize, usize),
}

impl UnetKey {
    fn of(frames: usize, plan: &SamplePlan) -> Self {
        let (frames, windows) = match plan.context {
            None => (frames, (1, frames)),
            Some(c) if c.method == ContextMethod::Uniform => (c.window_len(frames), (1, c.window_len(frames))),
            Some(c) => {
                let f = c.fusion(frames);
                (frames, (f.windows.len(), f.window_len()))
            }
        };
        Self { frames, tokens: plan.tokens, per_frame: plan.per_frame, windows }
    }
}

impl Pipeline {
    /// Checks the video shape against the artifact and loads the three graphs on `runtime`,
    /// calling `progress` with each graph's name before loading it. The UNet is loaded for
    /// one-chunk prompts (77 context tokens); see [`load_for_tokens`](Self::load_for_tokens).
    pub fn load(artifact: Artifact, runtime: &Runtime, shape: VideoShape, progress: impl FnMut(&str)) -> Result<Self> {
        Self::load_for_tokens(artifact, runtime, shape, MAX_LENGTH, progress)
    }

    /// [`load`](Self::load) with the UNet loaded for a context of `tokens` (77 × the prompt
    /// chunks of [`encode_prompts`](Self::encode_prompts)): tract optimises a graph for its input
    /// shapes, so a context of another length later reloads the UNet.
    pub fn load_for_tokens(artifact: Artifact, runtime: &Runtime, shape: VideoShape, tokens: usize, progress: impl FnMut(&str)) -> Result<Self> {
        Self::load_with(artifact, runtime, shape, SamplePlan { tokens, ..Default::default() }, progress)
    }

    /// [`load`](Self::load) for sampling as `plan` says: context length, context windows (then
    /// `shape` may have more frames than the motion module takes, see [`VideoShape::check_with`])
    /// and one text context per frame or per video.
    pub fn load_with(artifact: Artifact, runtime: &Runtime, shape: VideoShape, plan: SamplePlan, mut progress: impl FnMut(&str)) -> Result<Self> {
        shape.check_with(&artifact, plan.context.as_ref())?;
        let key = UnetKey::of(shape.frames, &plan);
        let h = shape.height / 8;
        let w = shape.width / 8;
        let warnings = crate::attention_fit::check(&artifact, runtime.ep, VideoShape { frames: key.frames, ..shape })?;
        let tokenizer = ClipTokenizer::for_artifact(&artifact)?;
        let c = artifact.latent_channels();
        progress("text encoder");
        let text_encoder = runtime.load(&artifact.graph_path("text_encoder"), &[InputSpec::i64([2, MAX_LENGTH])])?;
        progress("UNet");
        let unet = load_unet(&artifact, runtime, shape, key)?;
        progress("VAE decoder");
        let vae = runtime.load(&artifact.graph_path("vae_decoder"), &[InputSpec::f32([1, c, h, w])])?;
        Ok(Self { artifact, shape, warnings, runtime: runtime.clone(), tokenizer, text_encoder, unet, unet_key: key, context: plan.context, vae })
    }

    /// Samples with `context` windows from now on, or with none (checked against the video shape;
    /// the UNet is reloaded when the next sampling needs other shapes).
    pub fn set_context(&mut self, context: Option<ContextOptions>) -> Result<()> {
        self.shape.check_with(&self.artifact, context.as_ref())?;
        self.context = context;
        Ok(())
    }

    /// The context windows in use.
    pub fn context(&self) -> Option<ContextOptions> {
        self.context
    }

    /// The artifact's tokenizer, with its trigger words.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The prompt's CLIP token ids as the official code has them, padded or truncated to 77
    /// (see [`ClipTokenizer::encode`]).
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<i64>> {
        self.tokenizer.encode(prompt)
    }

    /// `prompt` as 77-token chunks under `syntax` (see [`crate::prompt`]).
    pub fn tokenize_prompt(&self, prompt: &str, syntax: PromptSyntax) -> Result<TokenizedPrompt> {
        self.tokenizer.tokenize(prompt, syntax)
    }

    /// Text embeddings `(2, 77, D)` of `[uncond, cond]` token ids (one chunk each, last layer,
    /// no weights).
    pub fn encode(&mut self, uncond: &[i64], cond: &[i64]) -> Result<Vec<f32>> {
        if uncond.len() != MAX_LENGTH || cond.len() != MAX_LENGTH {
            return Err(Error::Input(format!("token ids must have length {MAX_LENGTH}")));
        }
        let chunk = |ids: &[i64]| TokenizedPrompt { chunks: vec![Chunk { ids: ids.to_vec(), weights: vec![1.0; MAX_LENGTH] }], token_count: 0, truncated: 0 };
        self.encode_prompts(&chunk(uncond), &chunk(cond), 1)
    }

    /// Text embeddings `(2, 77 × chunks, D)` of the negative prompt (row 0) and the prompt
    /// (row 1), as A1111 makes them: each chunk encoded alone and taken at CLIP skip `clip_skip`
    /// (1 = the last layer, 2 = the one before, ...; [`check_clip_skip`]), its weights applied
    /// with [`emphasize`], the chunks concatenated; the one with fewer chunks padded with the
    /// empty prompt's chunk (A1111's `pad_cond_uncond`).
    pub fn encode_prompts(&mut self, negative: &TokenizedPrompt, prompt: &TokenizedPrompt, clip_skip: usize) -> Result<Vec<f32>> {
        check_clip_skip(&self.artifact, clip_skip)?;
        let layers = self.artifact.manifest.architecture.text_encoder.num_hidden_layers;
        let chunks = negative.chunks.len().max(prompt.chunks.len());
        if chunks == 0 || chunks > MAX_CHUNKS {
            return Err(Error::Input(format!("a prompt has 1 to {MAX_CHUNKS} chunks, not {chunks}")));
        }
        let empty = Chunk::empty(BOS, EOS);
        let d = self.artifact.context_dim();
        let vocab = self.artifact.manifest.token_table_len() as i64;
        let mut rows = [Vec::with_capacity(chunks * MAX_LENGTH * d), Vec::with_capacity(chunks * MAX_LENGTH * d)];
        for j in 0..chunks {
            let pair = [negative.chunks.get(j).unwrap_or(&empty), prompt.chunks.get(j).unwrap_or(&empty)];
            for c in pair {
                if c.ids.len() != MAX_LENGTH || c.weights.len() != MAX_LENGTH {
                    return Err(Error::Input(format!("a prompt chunk has {MAX_LENGTH} token ids and weights, not {} and {}", c.ids.len(), c.weights.len())));
                }
                if let Some(bad) = c.ids.iter().find(|&&i| !(0..vocab).contains(&i)) {
                    return Err(Error::Input(format!("token id {bad} is outside this text encoder's table (0 to {})", vocab - 1)));
                }
            }
            let ids: Vec<i64> = pair[0].ids.iter().chain(&pair[1].ids).copied().collect();
            let mut outputs = self.text_encoder.run_all(&[Tensor::I64 { shape: vec![2, MAX_LENGTH], data: ids }])?;
            let per_layer = 2 * MAX_LENGTH * d;
            let z = if clip_skip == 1 {
                outputs.swap_remove(0).1
            } else {
                let (shape, all) = outputs.swap_remove(1);
                let layer = layers - clip_skip;
                if shape != [layers, 2, MAX_LENGTH, d] {
                    return Err(Error::Input(format!("the text encoder's hidden_states are {shape:?}, expected [{layers}, 2, {MAX_LENGTH}, {d}]")));
                }
                all[layer * per_layer..(layer + 1) * per_layer].to_vec()
            };
            for (row, (z, c)) in rows.iter_mut().zip(z.chunks(MAX_LENGTH * d).zip(pair)) {
                let start = row.len();
                row.extend_from_slice(z);
                emphasize(&mut row[start..], &c.weights);
            }
        }
        let [mut context, cond] = rows;
        context.extend(cond);
        Ok(context)
    }

    /// Text embeddings for prompt travel: the prompt of each keyframe `(frame, prompt)` encoded as
    /// [`encode_prompts`](Self::encode_prompts) does (every prompt padded to the most chunks any
    /// has, with the empty prompt's chunk), then one context per frame of a video of `frames`,
    /// linearly interpolated between keyframes as diffusers' FreeNoise does (frame `a + i` of
    /// the keyframes `a < b` is `(1 − i/(b−a))·E_a + i/(b−a)·E_b`); frames before the first
    /// keyframe and after the last hold it, or with `closed_loop` the last interpolates towards
    /// the first, `frames` later. The negative prompt stays one per video. Keyframes must be
    /// distinct frames below `frames` ([`Setting::Keyframes`]).
    pub fn encode_travel(&mut self, negative: &TokenizedPrompt, keyframes: &[(usize, TokenizedPrompt)], frames: usize, closed_loop: bool, clip_skip: usize) -> Result<TextConditioning> {
        let invalid = |value: String, reason: String| Err(Error::Invalid { setting: Setting::Keyframes, value, reason });
        if keyframes.is_empty() {
            return invalid("none".into(), "expected at least one keyframe prompt".into());
        }
        let mut order: Vec<usize> = (0..keyframes.len()).collect();
        order.sort_by_key(|&i| keyframes[i].0);
        for pair in order.windows(2) {
            if keyframes[pair[0]].0 == keyframes[pair[1]].0 {
                return invalid(keyframes[pair[0]].0.to_string(), "two prompts for the same frame; give each frame one".into());
            }
        }
        if let Some((f, _)) = keyframes.iter().find(|(f, _)| *f >= frames) {
            return invalid(f.to_string(), format!("a keyframe must be a frame of the video, 0 to {}", frames.saturating_sub(1)));
        }
        let chunks = keyframes.iter().map(|(_, p)| p.chunks.len()).chain([negative.chunks.len()]).max().unwrap_or(1);
        let pad = |p: &TokenizedPrompt| {
            let mut p = p.clone();
            while p.chunks.len() < chunks {
                p.chunks.push(Chunk::empty(BOS, EOS));
            }
            p
        };
        let negative = pad(negative);
        let mut keys = Vec::with_capacity(keyframes.len());
        let mut negative_rows = Vec::new();
        for &i in &order {
            let pair = self.encode_prompts(&negative, &pad(&keyframes[i].1), clip_skip)?;
            let (neg, prompt) = pair.split_at(pair.len() / 2);
            if negative_rows.is_empty() {
                negative_rows = neg.to_vec();
            }
            keys.push((keyframes[i].0, prompt.to_vec()));
        }
        let refs: Vec<(usize, &[f32])> = keys.iter().map(|(f, e)| (*f, &e[..])).collect();
        let prompt = interpolate_keyframes(&refs, frames, closed_loop);
        Ok(TextConditioning { tokens: chunks * MAX_LENGTH, negative: negative_rows, prompt, per_frame: true })
    }

    /// The context length the UNet is loaded for (77 × prompt chunks).
    pub fn unet_tokens(&self) -> usize {
        self.unet_key.tokens
    }

    /// Loads the UNet again for a context of `tokens` (77 × prompt chunks) if it was loaded for
    /// another length; [`sample_with`](Self::sample_with) does it when needed.
    pub fn load_unet_for_tokens(&mut self, tokens: usize) -> Result<()> {
        let plan = SamplePlan { tokens, context: self.context, per_frame: self.unet_key.per_frame };
        self.load_unet_for(UnetKey::of(self.shape.frames, &plan))
    }

    fn load_unet_for(&mut self, key: UnetKey) -> Result<()> {
        if key != self.unet_key {
            // the old session goes first: two full-size UNets need not fit together
            self.unet = Box::new(Unloaded);
            self.unet = load_unet(&self.artifact, &self.runtime, self.shape, key)?;
            self.unet_key = key;
        }
        Ok(())
    }

    /// Runs `steps` DDIM steps (the official sampler) from `latents` `(1, 4, F, h, w)` with
    /// guidance `scale`: [`sample_with`](Self::sample_with) with [`Sampling::ddim`], which draws
    /// no noise.
    pub fn sample(&mut self, context: &[f32], latents: Vec<f32>, steps: usize, scale: f32, on_step: impl FnMut(usize, f32)) -> Result<Vec<f32>> {
        self.sample_with(context, latents, &Sampling::ddim(steps, scale), &mut crate::noise::SplitMix::new(0), on_step)
    }

    /// Samples from unit-variance `noise` `(1, 4, F, h, w)` (diffusers' `latents=`: the sampler
    /// multiplies it by its initial σ) as `sampling` says, drawing the per-step noise of
    /// ancestral samplers from `draws`; calls `on_step(i, t)` after each step. `context` is
    /// `(2, tokens, D)`, negative first ([`encode_prompts`](Self::encode_prompts)). Returns the
    /// latents after the last step. The settings are checked first ([`check_sampling`]), and the
    /// noise must be finite.
    pub fn sample_with(&mut self, context: &[f32], noise: Vec<f32>, sampling: &Sampling, draws: &mut dyn NoiseSource, on_step: impl FnMut(usize, f32)) -> Result<Vec<f32>> {
        let text = TextConditioning::from_pair(&self.artifact, context)?;
        self.sample_conditioned(&text, noise, sampling, draws, on_step)
    }

    /// Unit-variance initial noise for this video from `draws`: `(1, 4, F, h, w)` standard normal
    /// values, re-scheduled as FreeNoise does ([`shuffle_context`]) when sampling with FreeNoise
    /// windows (diffusers' `prepare_latents` with `enable_free_noise(noise_type="shuffle_context")`).
    pub fn initial_noise(&self, draws: &mut dyn NoiseSource) -> Vec<f32> {
        let c = self.artifact.latent_channels();
        let mut noise = draws.draw(self.shape.latent_len(c));
        if let Some(ctx) = self.context.filter(|c| c.method == ContextMethod::FreeNoise) {
            let hw = (self.shape.height / 8) * (self.shape.width / 8);
            shuffle_context(&mut noise, c, self.shape.frames, hw, &ctx, draws);
        }
        noise
    }

    /// [`sample_with`](Self::sample_with) with any [`TextConditioning`]: one text context per
    /// video or per frame. With context windows ([`set_context`](Self::set_context)): uniform
    /// runs the UNet on each window and fuses the guided noise predictions (each frame the
    /// weighted mean of its windows'), FreeNoise runs it once on every frame with the motion
    /// modules windowed; the sampler steps the whole video either way, so every sampler works.
    pub fn sample_conditioned(
        &mut self,
        text: &TextConditioning,
        noise: Vec<f32>,
        sampling: &Sampling,
        draws: &mut dyn NoiseSource,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>> {
        let mut sampler = check_sample_inputs(&self.artifact, self.shape, text, &noise, sampling)?;
        let plan = self.step_plan(text)?;
        let sigma = sampler.init_noise_sigma();
        let mut latents: Vec<f32> = noise.into_iter().map(|v| v * sigma).collect();
        let timesteps = sampler.timesteps().to_vec();
        for (i, t) in timesteps.into_iter().enumerate() {
            let input = sampler.scale_model_input(i, &latents);
            let guided = self.noise_at(&plan, text, &input, t, sampling.guidance)?;
            sampler.step(i, &guided, &mut latents, draws);
            on_step(i, t);
        }
        Ok(latents)
    }

    /// The guided noise prediction the sampler steps with, for the model input `x`
    /// `(1, 4, F, h, w)` at timestep `t` with guidance `scale` (one sampling step's UNet work,
    /// context windows included): what [`sample_conditioned`](Self::sample_conditioned) computes
    /// each step, for checks against a reference's intermediate tensors.
    pub fn guided_noise(&mut self, text: &TextConditioning, x: &[f32], t: f32, scale: f32) -> Result<Vec<f32>> {
        check_sample_inputs(&self.artifact, self.shape, text, x, &Sampling::ddim(1, scale))?;
        let plan = self.step_plan(text)?;
        self.noise_at(&plan, text, x, t, scale)
    }

    /// How one step's UNet work is laid out for `text` under the current context windows (loading
    /// the UNet for it if needed): made once per sampling run, not per step.
    fn step_plan(&mut self, text: &TextConditioning) -> Result<StepPlan> {
        let frames = self.shape.frames;
        let plan = SamplePlan { tokens: text.tokens, context: self.context, per_frame: text.per_frame };
        self.load_unet_for(UnetKey::of(frames, &plan))?;
        let plain = |n: usize| Fusion { frames: n, windows: vec![(0..n).collect()], shares: vec![vec![1.0; n]] };
        let (windows, motion) = match self.context {
            // the UNet on each window, each frame the weighted mean of its windows' predictions
            Some(ctx) if ctx.method == ContextMethod::Uniform && ctx.window_len(frames) < frames => {
                let fusion = ctx.fusion(frames);
                let motion = plain(fusion.window_len()).motion_inputs();
                (Some(fusion), motion)
            }
            // every frame at once: plain, or FreeNoise's windows inside the motion modules
            Some(ctx) if ctx.method == ContextMethod::FreeNoise => (None, ctx.fusion(frames).motion_inputs()),
            _ => (None, plain(frames).motion_inputs()),
        };
        Ok(StepPlan { windows, motion: self.artifact.motion_windows().then_some(motion) })
    }

    fn noise_at(&mut self, plan: &StepPlan, text: &TextConditioning, x: &[f32], t: f32, scale: f32) -> Result<Vec<f32>> {
        let frames = self.shape.frames;
        let (c, hw) = (self.artifact.latent_channels(), (self.shape.height / 8) * (self.shape.width / 8));
        match &plan.windows {
            Some(fusion) => {
                let mut fused = vec![0f32; x.len()];
                for (window, shares) in fusion.windows.iter().zip(&fusion.shares) {
                    let part = gather_frames(x, c, frames, hw, window);
                    let eps = self.guided_eps(&part, window, text, t, scale, plan.motion.as_ref())?;
                    add_frames(&mut fused, &eps, c, frames, hw, window, shares);
                }
                Ok(fused)
            }
            None => {
                let all: Vec<usize> = (0..frames).collect();
                self.guided_eps(x, &all, text, t, scale, plan.motion.as_ref())
            }
        }
    }

    /// One UNet run with classifier-free guidance on `x` `(1, C, len, h, w)`, the video's frames
    /// `frames`: `ε_u + s·(ε_c − ε_u)` above scale 1, `ε_c` otherwise (the official pipeline).
    fn guided_eps(&mut self, x: &[f32], frames: &[usize], text: &TextConditioning, t: f32, scale: f32, motion: Option<&(Vec<i64>, Vec<f32>)>) -> Result<Vec<f32>> {
        let c = self.artifact.latent_channels();
        let shape = vec![2, c, frames.len(), self.shape.height / 8, self.shape.width / 8];
        let doubled: Vec<f32> = x.iter().chain(x.iter()).copied().collect();
        let (context_shape, context) = text.unet_context(frames);
        let mut inputs = vec![
            Tensor::F32 { shape, data: doubled },
            Tensor::F32 { shape: vec![2], data: vec![t; 2] },
            Tensor::F32 { shape: context_shape, data: context },
        ];
        if let Some((windows, fuse)) = motion {
            let (w, l) = self.unet_key.windows;
            inputs.push(Tensor::I64 { shape: vec![w, l], data: windows.clone() });
            inputs.push(Tensor::F32 { shape: vec![frames.len(), w, l], data: fuse.clone() });
        }
        let (_, eps) = self.unet.run(&inputs)?;
        let (eu, ec) = eps.split_at(eps.len() / 2);
        Ok(if scale > 1.0 { eu.iter().zip(ec).map(|(u, c)| u + scale * (c - u)).collect() } else { ec.to_vec() })
    }

    /// Decodes `(1, 4, F, h, w)` latents one frame at a time, as the official code.
    pub fn decode(&mut self, latents: &[f32], mut on_frame: impl FnMut(usize)) -> Result<Vec<Frame>> {
        let c = self.artifact.latent_channels();
        let VideoShape { frames, height, width } = self.shape;
        let hw = (height / 8) * (width / 8);
        if latents.len() != self.shape.latent_len(c) {
            return Err(Error::Input(format!("latents hold {} values, expected {} (1×{c}×{frames}×{}×{})", latents.len(), self.shape.latent_len(c), height / 8, width / 8)));
        }
        let mut out = Vec::with_capacity(frames);
        for f in 0..frames {
            let z: Vec<f32> = (0..c).flat_map(|ch| latents[(ch * frames + f) * hw..(ch * frames + f + 1) * hw].iter().copied()).collect();
            let (_, x) = self.vae.run(&[Tensor::F32 { shape: vec![1, c, height / 8, width / 8], data: z }])?;
            out.push(to_frame(&x, width, height));
            on_frame(f);
        }
        Ok(out)
    }
}

/// The UNet of `artifact` on `runtime` for `shape`'s latent size and the input shapes of `key`.
fn load_unet(artifact: &Artifact, runtime: &Runtime, shape: VideoShape, key: UnetKey) -> Result<Box<dyn GraphSession>> {
    check_tokens(artifact, key.tokens)?;
    let (c, d) = (artifact.latent_channels(), artifact.context_dim());
    let (frames, h, w) = (key.frames, shape.height / 8, shape.width / 8);
    let context_batch = if key.per_frame { 2 * frames } else { 2 };
    let mut specs = vec![InputSpec::f32([2, c, frames, h, w]), InputSpec::f32([2]), InputSpec::f32([context_batch, key.tokens, d])];
    if artifact.motion_windows() {
        let (n, l) = key.windows;
        specs.push(InputSpec::i64([n, l]));
        specs.push(InputSpec::f32([frames, n, l]));
    }
    runtime.load(&artifact.graph_path("unet"), &specs)
}

/// The frames `frames` of `x` `(1, C, F, h, w)` (`hw` = h·w): `(1, C, len, h, w)`.
fn gather_frames(x: &[f32], c: usize, f: usize, hw: usize, frames: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(c * frames.len() * hw);
    for ch in 0..c {
        for &j in frames {
            out.extend_from_slice(&x[(ch * f + j) * hw..(ch * f + j + 1) * hw]);
        }
    }
    out
}

/// Adds `share[i] · part[:, :, i]` to frame `frames[i]` of `into` `(1, C, F, h, w)`.
fn add_frames(into: &mut [f32], part: &[f32], c: usize, f: usize, hw: usize, frames: &[usize], shares: &[f32]) {
    let len = frames.len();
    for ch in 0..c {
        for (i, (&j, &s)) in frames.iter().zip(shares).enumerate() {
            let src = &part[(ch * len + i) * hw..(ch * len + i + 1) * hw];
            let dst = &mut into[(ch * f + j) * hw..(ch * f + j + 1) * hw];
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d += s * v);
        }
    }
}

/// One sampling step's UNet work: uniform windows to run and fuse (none: one run over every
/// frame), and the motion-window inputs when the UNet has them.
struct StepPlan {
    windows: Option<Fusion>,
    motion: Option<(Vec<i64>, Vec<f32>)>,
}

/// The UNet's place while it is reloaded.
struct Unloaded;

impl GraphSession for Unloaded {
    fn run_all(&mut self, _: &[Tensor]) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        Err(Error::Input("the UNet failed to reload; load the pipeline again".into()))
    }
}

/// Raw decoder output `(1, 3, H, W)` → RGB bytes: `trunc(255 · clamp(x/2 + 0.5, 0, 1))`, the
/// official `save_videos_grid` conversion (docs/spec.md §7).
fn to_frame(x: &[f32], width: usize, height: usize) -> Frame {
    let plane = width * height;
    let mut rgb = vec![0u8; plane * 3];
    for p in 0..plane {
        for ch in 0..3 {
            let v = (x[ch * plane + p] / 2.0 + 0.5).clamp(0.0, 1.0);
            rgb[p * 3 + ch] = (v * 255.0) as u8;
        }
    }
    Frame { width, height, rgb }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_refuses_non_finite_latents_and_guidance_and_wrong_lengths_with_the_setting_named() {
        let a = Artifact::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../graphs/micro_v2")).unwrap();
        let shape = VideoShape { frames: 2, height: 64, width: 64 };
        let (n, ctx) = (shape.latent_len(a.latent_channels()), vec![0.0; 2 * MAX_LENGTH * a.context_dim()]);
        let mut latents = vec![0.5f32; n];
        let text = TextConditioning::from_pair(&a, &ctx).unwrap();
        check_sample_inputs(&a, shape, &text, &latents, &Sampling::ddim(2, 7.5)).unwrap();
        latents[17] = f32::NAN;
        match check_sample_inputs(&a, shape, &text, &latents, &Sampling::ddim(2, 7.5)).unwrap_err() {
            Error::Invalid { setting: Setting::Latents, value, .. } => assert_eq!(value, "[17] = NaN"),
            other => panic!("{other}"),
        }
        latents[17] = 0.5;
        let e = check_sample_inputs(&a, shape, &text, &latents, &Sampling::ddim(2, f32::INFINITY)).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Guidance, .. }), "{e}");
        assert!(TextConditioning::from_pair(&a, &ctx[1..]).unwrap_err().to_string().contains("text embeddings"));
        let mut per_frame = TextConditioning { per_frame: true, ..text.clone() };
        assert!(check_sample_inputs(&a, shape, &per_frame, &latents, &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("text embeddings"));
        per_frame.prompt = per_frame.prompt.repeat(shape.frames);
        check_sample_inputs(&a, shape, &per_frame, &latents, &Sampling::ddim(2, 7.5)).unwrap();
        assert!(check_sample_inputs(&a, shape, &text, &latents[1..], &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("initial latents"));
    }

    #[test]
    fn long_videos_need_context_windows_within_the_bounds() {
        let a = Artifact::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../graphs/micro_v2")).unwrap();
        let shape = |frames, side| VideoShape { frames, height: side, width: side };
        let windows = ContextOptions::default();
        let e = shape(40, 64).check(&a).unwrap_err();
        assert!(matches!(e, Error::FramesNeedContext { frames: 40, max: 32, .. }), "{e}");
        assert!(e.to_string().contains("Pipeline::set_context uniform"), "{e}");
        shape(40, 64).check_with(&a, Some(&windows)).unwrap();
        shape(crate::MAX_VIDEO_FRAMES, 64).check_with(&a, Some(&windows)).unwrap();
        let e = shape(crate::MAX_VIDEO_FRAMES + 1, 64).check_with(&a, Some(&windows)).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Frames, .. }), "{e}");
        // 4096 frames of 2048² would keep 51 GB of frames: refused before anything is allocated
        let e = shape(4096, 2048).check_with(&a, Some(&windows)).unwrap_err();
        assert!(e.to_string().contains("a video holds at most 4294967296"), "{e}");
        shape(1024, 2048).check_with(&a, Some(&windows)).unwrap();
        let long = ContextOptions { length: 33, ..windows };
        assert!(matches!(shape(40, 64).check_with(&a, Some(&long)), Err(Error::Invalid { setting: Setting::ContextLength, .. })));
        // an artifact built before the motion-window inputs runs uniform windows but not FreeNoise
        let mut old = a.clone();
        old.manifest.graphs.unet.inputs.truncate(3);
        let freenoise = ContextOptions { method: ContextMethod::FreeNoise, ..windows };
        shape(40, 64).check_with(&old, Some(&windows)).unwrap();
        let e = shape(40, 64).check_with(&old, Some(&freenoise)).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Context, .. }) && e.to_string().contains("rebuild it with `build-graph --motion-windows`"), "{e}");
    }
}
