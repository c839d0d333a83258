//! Long videos and prompt travel against the reference (`tools/reference/context_goldens.py`,
//! `tests/goldens/context.npz`), on tract and ONNX Runtime CPU, 4 DDIM steps with guidance 7.5 on
//! the personalised fixture models at 64×64:
//!
//! - FreeNoise as diffusers runs it (`enable_free_noise`, its own pipeline): 40 frames v2 pyramid,
//!   48 frames v1 flat, 44 frames v2 pyramid (diffusers' last-window rule): the seed's initial
//!   noise with its `shuffle_context` re-scheduling (exact), the first step's guided noise
//!   prediction (≤ 1e-4 relative) and the final latents (≤ 5e-3 relative);
//! - uniform windows (AnimateDiff-Evolved's standard static schedule, written independently in the
//!   reference tool): 40 frames v2 pyramid, 48 frames v1 flat: windows, each window's and the fused
//!   first-step prediction, final latents;
//! - prompt travel over keyframes 0, 16, 32: the per-frame embeddings diffusers interpolates, then
//!   FreeNoise and uniform sampling with them.

use std::fs::File;

use animatediff_build::build;
use animatediff_onnx::{goldens_dir, variant_options, Deviation};
use animatediff_runtime::noise::torch::TorchGenerator;
use animatediff_runtime::{
    Artifact, Chunk, ContextFuse, ContextMethod, ContextOptions, Ep, Pipeline, Runtime, RuntimeOptions, SamplePlan, Sampling, TextConditioning, TokenizedPrompt,
    VideoShape,
};
use ndarray::{ArrayD, Axis};
use ndarray_npy::NpzReader;

struct Golden(NpzReader<File>, String);

impl Golden {
    fn open(case: &str) -> Self {
        Self(NpzReader::new(File::open(goldens_dir().join("context.npz")).unwrap()).unwrap(), case.into())
    }
    fn f32(&mut self, name: &str) -> ArrayD<f32> {
        self.0.by_name(&format!("{}__{name}", self.1)).unwrap_or_else(|e| panic!("{}__{name}: {e}", self.1))
    }
    fn i64(&mut self, name: &str) -> ArrayD<i64> {
        self.0.by_name(&format!("{}__{name}", self.1)).unwrap_or_else(|e| panic!("{}__{name}: {e}", self.1))
    }
}

fn artifact(mm: &str, dir: &std::path::Path) -> Artifact {
    let out = dir.join(format!("personalized_{mm}"));
    // with the motion-window inputs FreeNoise needs (build-graph --motion-windows)
    build(&animatediff_build::BuildOptions { motion_windows: true, ..variant_options("personalized", mm, &out) }).unwrap();
    Artifact::open(&out).unwrap()
}

fn one_chunk(ids: ndarray::ArrayViewD<i64>) -> TokenizedPrompt {
    let ids: Vec<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 77);
    TokenizedPrompt { chunks: vec![Chunk { ids, weights: vec![1.0; 77] }], token_count: 0, truncated: 0 }
}

fn guided(noise_pred: &ArrayD<f32>) -> Vec<f32> {
    let s = noise_pred.as_slice().unwrap();
    let (u, c) = s.split_at(s.len() / 2);
    u.iter().zip(c).map(|(u, c)| u + 7.5 * (c - u)).collect()
}

fn report(what: &str, got: &[f32], reference: &[f32], tolerance: f32) {
    let d = Deviation::of(got, reference);
    println!("{what:50} {d}");
    assert!(d.max_abs <= tolerance * d.max_ref, "{what}: {d} exceeds {tolerance} × max|ref|");
}

fn context(method: ContextMethod, fuse: ContextFuse) -> ContextOptions {
    ContextOptions { method, fuse, ..Default::default() }
}

/// How a case's text is made: one prompt, or the travel golden's keyframes.
enum Text {
    Prompt,
    Travel,
}

fn case(name: &str, mm: &str, ctx: ContextOptions, text: Text) {
    let dir = tempfile::tempdir().unwrap();
    let art = artifact(mm, dir.path());
    let mut g = Golden::open(name);
    let init = g.f32("init_latents");
    let frames = init.shape()[2];
    let shape = VideoShape { frames, height: 64, width: 64 };
    let seed = g.i64("seed").first().copied().unwrap() as u64;
    let init = init.as_slice().unwrap().to_vec();
    let plan = SamplePlan { tokens: 77, context: Some(ctx), per_frame: matches!(text, Text::Travel) };

    // the windows are the reference's
    let fusion = ctx.fusion(frames);
    if ctx.method == ContextMethod::Uniform {
        let windows = g.i64("windows");
        let want: Vec<Vec<usize>> = windows.outer_iter().map(|w| w.iter().map(|&f| f as usize).collect()).collect();
        assert_eq!(fusion.windows, want, "{name}: windows");
    } else {
        let windows = g.i64("windows");
        let want: Vec<usize> = windows.outer_iter().map(|w| w[0] as usize).collect();
        assert_eq!(fusion.windows.iter().map(|w| w[0]).collect::<Vec<_>>(), want, "{name}: window starts");
    }

    let travel = match text {
        Text::Travel => {
            let mut t = Golden::open("travel_v2_40");
            Some((t.i64("keyframes"), t.i64("keyframe_ids"), t.i64("negative_ids"), t.f32("prompt_embeds"), t.f32("negative_embeds")))
        }
        Text::Prompt => None,
    };

    for ep in [Ep::Tract, Ep::Cpu] {
        let runtime = Runtime::new(RuntimeOptions { ep, ..Default::default() }).unwrap();
        let mut p = Pipeline::load_with(art.clone(), &runtime, shape, plan, |_| {}).unwrap();
        if ctx.method == ContextMethod::FreeNoise && ep == Ep::Tract {
            // the seed's noise, re-scheduled as diffusers does: exactly
            let noise = p.initial_noise(&mut TorchGenerator::new(seed));
            assert_eq!(noise, init, "{name}: initial noise from seed {seed}");
        }
        let text = match &travel {
            None => {
                let ctx = p.encode(g.i64("negative_ids").as_slice().unwrap(), g.i64("prompt_ids").as_slice().unwrap()).unwrap();
                TextConditioning::from_pair(&p.artifact, &ctx).unwrap()
            }
            Some((keyframes, ids, negative, prompt_ref, negative_ref)) => {
                let keys: Vec<(usize, TokenizedPrompt)> = keyframes.iter().zip(ids.axis_iter(Axis(0))).map(|(&f, ids)| (f as usize, one_chunk(ids))).collect();
                let t = p.encode_travel(&one_chunk(negative.view()), &keys, frames, false, 1).unwrap();
                report(&format!("{name} {ep:>5} per-frame prompt embeddings"), &t.prompt, prompt_ref.as_slice().unwrap(), 1e-5);
                let row = negative_ref.index_axis(Axis(0), 0);
                report(&format!("{name} {ep:>5} negative embeddings"), &t.negative, row.as_slice().unwrap(), 1e-5);
                t
            }
        };
        // the first step's guided noise prediction over the whole video
        let eps0 = p.guided_noise(&text, &init, 751.0, 7.5).unwrap();
        let eps_ref = if ctx.method == ContextMethod::FreeNoise { guided(&g.f32("noise_pred_step0")) } else { g.f32("eps_step0").as_slice().unwrap().to_vec() };
        report(&format!("{name} {ep:>5} step-0 guided noise"), &eps0, &eps_ref, 1e-4);
        let latents = p.sample_conditioned(&text, init.clone(), &Sampling::ddim(4, 7.5), &mut TorchGenerator::new(0), |_, _| {}).unwrap();
        report(&format!("{name} {ep:>5} final latents"), &latents, g.f32("final_latents").as_slice().unwrap(), 5e-3);
    }
}

#[test]
fn freenoise_v2_40_frames_pyramid() {
    case("freenoise_v2_40", "v2", context(ContextMethod::FreeNoise, ContextFuse::Pyramid), Text::Prompt)
}

#[test]
fn freenoise_v1_48_frames_flat() {
    case("freenoise_v1_48", "v1", context(ContextMethod::FreeNoise, ContextFuse::Flat), Text::Prompt)
}

#[test]
fn freenoise_v2_44_frames_pyramid_with_the_last_window_rule() {
    case("freenoise_v2_44", "v2", context(ContextMethod::FreeNoise, ContextFuse::Pyramid), Text::Prompt)
}

#[test]
fn uniform_v2_40_frames_pyramid() {
    case("uniform_v2_40", "v2", context(ContextMethod::Uniform, ContextFuse::Pyramid), Text::Prompt)
}

#[test]
fn uniform_v1_48_frames_flat() {
    case("uniform_v1_48", "v1", context(ContextMethod::Uniform, ContextFuse::Flat), Text::Prompt)
}

#[test]
fn prompt_travel_freenoise_v2_40_frames() {
    case("travel_v2_40", "v2", context(ContextMethod::FreeNoise, ContextFuse::Pyramid), Text::Travel)
}

#[test]
fn prompt_travel_uniform_v2_40_frames() {
    case("travel_uniform_v2_40", "v2", context(ContextMethod::Uniform, ContextFuse::Pyramid), Text::Travel)
}

/// Each uniform window's own prediction at step 0: the window's 16 frames run alone (no context
/// windows, 16 frames), against the reference's per-window tensors.
#[test]
fn uniform_windows_one_by_one_equal_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let art = artifact("v2", dir.path());
    let mut g = Golden::open("uniform_v2_40");
    let init = g.f32("init_latents");
    let windows = g.i64("windows");
    let per_window = g.f32("eps_step0_windows");
    let runtime = Runtime::new(RuntimeOptions { ep: Ep::Tract, ..Default::default() }).unwrap();
    let mut p = Pipeline::load(art, &runtime, VideoShape { frames: 16, height: 64, width: 64 }, |_| {}).unwrap();
    let ctx = p.encode(g.i64("negative_ids").as_slice().unwrap(), g.i64("prompt_ids").as_slice().unwrap()).unwrap();
    let text = TextConditioning::from_pair(&p.artifact, &ctx).unwrap();
    for (w, frames) in windows.outer_iter().enumerate() {
        let idx: Vec<usize> = frames.iter().map(|&f| f as usize).collect();
        let x = init.select(Axis(2), &idx);
        let x: Vec<f32> = x.iter().copied().collect();
        let eps = p.guided_noise(&text, &x, 751.0, 7.5).unwrap();
        let reference = per_window.index_axis(Axis(0), w);
        let reference: Vec<f32> = reference.iter().copied().collect();
        report(&format!("uniform_v2_40 window {w} (frames {}..) step-0 noise", idx[0]), &eps, &reference, 1e-4);
    }
}

/// Every sampler with uniform windows: windows of 8 frames that do not overlap (stride 8) over 16
/// frames are two independent videos, so each deterministic sampler's result on frames 0–7 and
/// 8–15 must equal its plain 8-frame runs from the same noise, exactly; the ancestral ones (which
/// draw noise for the whole video) run and stay finite.
#[test]
fn every_sampler_steps_the_whole_video_with_the_fused_prediction() {
    use animatediff_runtime::{SamplerKind, SamplerOptions};
    let art = Artifact::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/micro_v2")).unwrap();
    let runtime = Runtime::new(RuntimeOptions { ep: Ep::Tract, ..Default::default() }).unwrap();
    let c = art.latent_channels();
    let hw = 8 * 8;
    let windows = ContextOptions { length: 8, overlap: 0, fuse: ContextFuse::Flat, ..Default::default() };
    let mut long = Pipeline::load_with(art.clone(), &runtime, VideoShape { frames: 16, height: 64, width: 64 }, SamplePlan { context: Some(windows), ..Default::default() }, |_| {}).unwrap();
    let mut short = Pipeline::load(art, &runtime, VideoShape { frames: 8, height: 64, width: 64 }, |_| {}).unwrap();
    let ids = |p: &Pipeline, s: &str| p.tokenize(s).unwrap();
    let ctx = long.encode(&ids(&long, ""), &ids(&long, "a red circle")).unwrap();
    let text = TextConditioning::from_pair(&long.artifact, &ctx).unwrap();
    let noise = animatediff_runtime::noise::gaussian(9, c * 16 * hw);
    let half = |x: &[f32], h: usize| -> Vec<f32> { (0..c).flat_map(|ch| x[(ch * 16 + 8 * h) * hw..(ch * 16 + 8 * h + 8) * hw].to_vec()).collect() };
    for kind in SamplerKind::ALL {
        let sampling = Sampling { sampler: SamplerOptions { kind, ..Default::default() }, steps: 3, guidance: 7.5 };
        let got = long.sample_conditioned(&text, noise.clone(), &sampling, &mut TorchGenerator::new(1), |_, _| {}).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{kind}");
        if matches!(kind, SamplerKind::EulerAncestral | SamplerKind::Lcm) {
            continue;
        }
        for h in 0..2 {
            let plain = short.sample_with(&ctx, half(&noise, h), &sampling, &mut TorchGenerator::new(1), |_, _| {}).unwrap();
            assert_eq!(half(&got, h), plain, "{kind}: frames {}..{} of the windowed run", 8 * h, 8 * h + 8);
        }
        println!("{kind}: 16 frames in two windows = two plain 8-frame runs, exactly");
    }
}
