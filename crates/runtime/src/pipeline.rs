//! The AnimateDiff sampling loop (docs/spec.md §8.7) over an artifact's three graphs:
//!
//! ```text
//! ctx = cat([E(negative), E(prompt)])                 uncond first
//! for t in timesteps:  ε_u, ε_c = UNet(cat([x, x]), t, ctx);  ε = ε_u + s·(ε_c − ε_u);  x = DDIM(x, ε, t)
//! frames = VAE(x, one frame at a time);  u8 = trunc(255 · clamp(x/2 + 0.5, 0, 1))
//! ```

use crate::artifact::Artifact;
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
    /// Frames (1 to the motion module's maximum, see [`Artifact::max_frames`]).
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
        let VideoShape { frames, height, width } = *self;
        let most = MAX_LATENT_SIDE * 8;
        for (setting, v) in [(Setting::Width, width), (Setting::Height, height)] {
            if v == 0 || v % 8 != 0 || v > most {
                let reason = format!("expected a multiple of 8 (the VAE's factor) from 8 to {most} pixels");
                return Err(Error::Invalid { setting, value: v.to_string(), reason });
            }
        }
        if frames == 0 || frames > artifact.max_frames() {
            return Err(Error::Invalid {
                setting: Setting::Frames,
                value: frames.to_string(),
                reason: format!("this model's {} motion module accepts 1 to {} frames", artifact.motion_version(), artifact.max_frames()),
            });
        }
        if let Some(f) = artifact.fixed_frames() {
            if f != frames {
                let reason = format!("the model was built for exactly {f} frames (its manifest's fixed frame count)");
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

/// [`Pipeline::sample_with`]'s arguments: `latents` of `shape`'s length and finite, `context` of
/// the text encoder's, `sampling` as [`check_sampling`] says; returns the sampler.
fn check_sample_inputs(artifact: &Artifact, shape: VideoShape, context: &[f32], latents: &[f32], sampling: &Sampling) -> Result<(Sampler, usize)> {
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
    let tokens = context_tokens(artifact, context)?;
    Ok((sampler, tokens))
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
    match artifact.manifest.graphs.unet.inputs.get(2).and_then(|s| s.shape.get(1)).and_then(|d| d.fixed()) {
        Some(n) if n != tokens => Err(Error::Input(format!(
            "the prompt needs {} chunks of 77 tokens, but this artifact's UNet takes exactly {n} context tokens (it was built before long prompts and BREAK; rebuild it with build-graph, or shorten the prompt to 75 tokens)",
            tokens / MAX_LENGTH
        ))),
        _ => Ok(tokens),
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
    /// The context length the UNet was loaded for (77 per prompt chunk).
    unet_tokens: usize,
    vae: Box<dyn GraphSession>,
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
    pub fn load_for_tokens(artifact: Artifact, runtime: &Runtime, shape: VideoShape, tokens: usize, mut progress: impl FnMut(&str)) -> Result<Self> {
        shape.check(&artifact)?;
        let h = shape.height / 8;
        let w = shape.width / 8;
        let warnings = crate::attention_fit::check(&artifact, runtime.ep, shape)?;
        let tokenizer = ClipTokenizer::for_artifact(&artifact)?;
        let c = artifact.latent_channels();
        progress("text encoder");
        let text_encoder = runtime.load(&artifact.graph_path("text_encoder"), &[InputSpec::i64([2, MAX_LENGTH])])?;
        progress("UNet");
        let unet = load_unet(&artifact, runtime, shape, tokens)?;
        progress("VAE decoder");
        let vae = runtime.load(&artifact.graph_path("vae_decoder"), &[InputSpec::f32([1, c, h, w])])?;
        Ok(Self { artifact, shape, warnings, runtime: runtime.clone(), tokenizer, text_encoder, unet, unet_tokens: tokens, vae })
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

    /// The context length the UNet is loaded for (77 × prompt chunks).
    pub fn unet_tokens(&self) -> usize {
        self.unet_tokens
    }

    /// Loads the UNet again for a context of `tokens` (77 × prompt chunks) if it was loaded for
    /// another length; [`sample_with`](Self::sample_with) does it when needed.
    pub fn load_unet_for_tokens(&mut self, tokens: usize) -> Result<()> {
        if tokens != self.unet_tokens {
            // the old session goes first: two full-size UNets need not fit together
            self.unet = Box::new(Unloaded);
            self.unet = load_unet(&self.artifact, &self.runtime, self.shape, tokens)?;
            self.unet_tokens = tokens;
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
    /// ancestral samplers from `draws`; calls `on_step(i, t)` after each step. Returns the
    /// latents after the last step. The settings are checked first ([`check_sampling`]), and the
    /// noise must be finite.
    pub fn sample_with(
        &mut self,
        context: &[f32],
        noise: Vec<f32>,
        sampling: &Sampling,
        draws: &mut dyn NoiseSource,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>> {
        let (mut sampler, tokens) = check_sample_inputs(&self.artifact, self.shape, context, &noise, sampling)?;
        self.load_unet_for_tokens(tokens)?;
        let (c, d) = (self.artifact.latent_channels(), self.artifact.context_dim());
        let n = self.shape.latent_len(c);
        let shape = vec![2, c, self.shape.frames, self.shape.height / 8, self.shape.width / 8];
        let sigma = sampler.init_noise_sigma();
        let mut latents: Vec<f32> = noise.into_iter().map(|v| v * sigma).collect();
        let timesteps = sampler.timesteps().to_vec();
        for (i, t) in timesteps.into_iter().enumerate() {
            let input = sampler.scale_model_input(i, &latents);
            let doubled: Vec<f32> = input.iter().chain(input.iter()).copied().collect();
            let (_, eps) = self.unet.run(&[
                Tensor::F32 { shape: shape.clone(), data: doubled },
                Tensor::F32 { shape: vec![2], data: vec![t; 2] },
                Tensor::F32 { shape: vec![2, tokens, d], data: context.to_vec() },
            ])?;
            let (eu, ec) = eps.split_at(n);
            // classifier-free guidance is active iff scale > 1 (official pipeline)
            let scale = sampling.guidance;
            let guided: Vec<f32> = if scale > 1.0 { eu.iter().zip(ec).map(|(u, c)| u + scale * (c - u)).collect() } else { ec.to_vec() };
            sampler.step(i, &guided, &mut latents, draws);
            on_step(i, t);
        }
        Ok(latents)
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

/// The UNet of `artifact` on `runtime` for `shape` and a context of `tokens`.
fn load_unet(artifact: &Artifact, runtime: &Runtime, shape: VideoShape, tokens: usize) -> Result<Box<dyn GraphSession>> {
    if tokens == 0 || !tokens.is_multiple_of(MAX_LENGTH) || tokens / MAX_LENGTH > MAX_CHUNKS {
        return Err(Error::Input(format!("a context of {tokens} tokens: expected 77 per prompt chunk, 1 to {MAX_CHUNKS} chunks")));
    }
    let (c, d) = (artifact.latent_channels(), artifact.context_dim());
    let (frames, h, w) = (shape.frames, shape.height / 8, shape.width / 8);
    runtime.load(&artifact.graph_path("unet"), &[InputSpec::f32([2, c, frames, h, w]), InputSpec::f32([2]), InputSpec::f32([2, tokens, d])])
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
        check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, 7.5)).unwrap();
        latents[17] = f32::NAN;
        match check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, 7.5)).unwrap_err() {
            Error::Invalid { setting: Setting::Latents, value, .. } => assert_eq!(value, "[17] = NaN"),
            other => panic!("{other}"),
        }
        latents[17] = 0.5;
        let e = check_sample_inputs(&a, shape, &ctx, &latents, &Sampling::ddim(2, f32::INFINITY)).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Guidance, .. }), "{e}");
        assert!(check_sample_inputs(&a, shape, &ctx[1..], &latents, &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("text embeddings"));
        assert!(check_sample_inputs(&a, shape, &ctx, &latents[1..], &Sampling::ddim(2, 7.5)).unwrap_err().to_string().contains("initial latents"));
    }
}
