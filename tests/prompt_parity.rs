//! Prompts against the reference (`tests/goldens/prompts.npz`, from
//! `tools/reference/prompt_goldens.py`: an independent Python implementation of A1111's prompt
//! parser, chunking, emphasis and embedding lookup on transformers' CLIP, and diffusers' own
//! `encode_prompt(clip_skip=…)` and `load_textual_inversion`), on one artifact: the personalized
//! fixture + the v2 motion module + the four fixture embeddings in the reference's order.
//!
//! - Every case's parsed segments (A1111 group), token ids, weights and A1111 token count are
//!   equal; the cases A1111 refuses are errors.
//! - Every case's conditioning (CLIP skip, emphasis, chunks concatenated) is within 1e-5 relative
//!   of the reference on tract and ONNX Runtime CPU, and so are diffusers' `clip_skip` and
//!   `load_textual_inversion` encodings.
//! - A 4-step DDIM run with a 2-chunk weighted prompt, an embedding in the 1-chunk negative
//!   prompt (padded with the empty prompt's chunk) and CLIP skip 2 ends within 5e-3 relative of
//!   the reference's final latents.

use std::fs::File;
use std::sync::OnceLock;

use animatediff_build::{build, EmbeddingSpec};
use animatediff_onnx::{fixtures, goldens_dir, variant_options, Deviation};
use animatediff_runtime::prompt::parse_attention;
use animatediff_runtime::{Artifact, ClipTokenizer, Ep, Pipeline, PromptSyntax, Runtime, RuntimeOptions, Sampling, TokenizedPrompt, VideoShape};
use ndarray::ArrayD;
use ndarray_npy::NpzReader;
use serde_json::Value;

/// Text-encoder outputs: max |error| / max |reference|.
const ENCODER_TOLERANCE: f32 = 1e-5;
/// The weighted conditioning against A1111's float32 emphasis. Its rescale divides two chunk
/// means that lie near 0 (the fixture encoder's LayerNorm output: |mean| down to 3e-4 against
/// values up to 4), and there torch's float32 sums of a chunk's 3,696 values put the reference
/// itself up to 6.5e-5 relative from the same algorithm with exact means (case a40; a38 3.8e-5,
/// a24 1.3e-5); we sum in f64. Against the exact-mean emphasis of the reference's own encoder
/// output we stay within [`ENCODER_TOLERANCE`] (checked first).
const EMPHASIS_TOLERANCE: f32 = 1e-4;
/// The 4-step loop (random weights amplify fp32 rounding from step to step, as in sampling_parity).
const LOOP_TOLERANCE: f32 = 5e-3;

/// The embeddings in the reference's order (`meta.embeddings`), with its trigger words.
const EMBEDDINGS: [(&str, Option<&str>); 4] =
    [("easyneg.pt", None), ("style.safetensors", Some("mystyle")), ("learned_embeds.bin", Some("<toy>")), ("clipl.safetensors", None)];

fn artifact() -> &'static Artifact {
    static A: OnceLock<(tempfile::TempDir, Artifact)> = OnceLock::new();
    &A.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("personalized_v2_embeddings");
        let set = fixtures();
        let embeddings = EMBEDDINGS
            .iter()
            .map(|(file, token)| EmbeddingSpec { path: set.path(&format!("embeddings/{file}")), token: token.map(str::to_owned) })
            .collect();
        build(&animatediff_build::BuildOptions { embeddings, golden: false, ..variant_options("personalized", "v2", &out) }).unwrap();
        let a = Artifact::open(&out).unwrap();
        (dir, a)
    })
    .1
}

struct Golden(NpzReader<File>);

impl Golden {
    fn open() -> Self {
        Golden(NpzReader::new(File::open(goldens_dir().join("prompts.npz")).unwrap()).unwrap())
    }
    fn f32(&mut self, name: &str) -> ArrayD<f32> {
        self.0.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    fn i64(&mut self, name: &str) -> ArrayD<i64> {
        self.0.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    fn json(&mut self, name: &str) -> Value {
        let bytes: ArrayD<u8> = self.0.by_name(name).unwrap();
        serde_json::from_slice(bytes.as_slice().unwrap()).unwrap()
    }
}

fn syntax(case: &Value) -> PromptSyntax {
    case["syntax"].as_str().unwrap().parse().unwrap()
}

/// The ids and weights of every chunk, flattened.
fn flat(p: &TokenizedPrompt) -> (Vec<i64>, Vec<f32>) {
    (p.chunks.iter().flat_map(|c| c.ids.clone()).collect(), p.chunks.iter().flat_map(|c| c.weights.clone()).collect())
}

#[test]
fn segments_ids_weights_and_token_counts_equal_the_reference() {
    let mut g = Golden::open();
    let cases = g.json("cases");
    let tokenizer = ClipTokenizer::for_artifact(artifact()).unwrap();
    let (mut compared, mut refused) = (0, 0);
    for case in cases.as_array().unwrap().iter().filter(|c| c["group"] != "diffusers" && c["group"] != "loop") {
        let (name, prompt) = (case["name"].as_str().unwrap(), case["prompt"].as_str().unwrap());
        if case["error"].as_bool().unwrap() {
            let e = tokenizer.tokenize(prompt, syntax(case)).expect_err(name);
            assert!(e.to_string().contains("not a number"), "{name}: {e}");
            refused += 1;
            continue;
        }
        if case["syntax"] == "a1111" {
            let segments: Vec<(String, f64)> = parse_attention(prompt).unwrap().into_iter().map(|s| (s.text, s.weight)).collect();
            let want: Vec<(String, f64)> =
                case["segments"].as_array().unwrap().iter().map(|s| (s[0].as_str().unwrap().to_owned(), s[1].as_f64().unwrap())).collect();
            assert_eq!(segments, want, "{name}: segments of {prompt:?}");
        }
        let p = tokenizer.tokenize(prompt, syntax(case)).unwrap();
        let (ids, weights) = flat(&p);
        let (want_ids, want_weights) = (g.i64(&format!("{name}__ids")), g.f32(&format!("{name}__weights")));
        assert_eq!(p.chunks.len(), want_ids.shape()[0], "{name}: chunks of {prompt:?}");
        assert_eq!(ids, want_ids.as_slice().unwrap(), "{name}: ids of {prompt:?}");
        assert_eq!(weights, want_weights.as_slice().unwrap(), "{name}: weights of {prompt:?}");
        let count = g.i64(&format!("{name}__token_count"));
        assert_eq!(p.token_count as i64, count.first().copied().unwrap(), "{name}: token count");
        compared += 1;
    }
    println!("{compared} prompts: segments, ids, weights and token counts equal; {refused} refused as A1111 refuses them");
    // the 3-chunk weighted prompt, token by token (position:id:text, ×weight where not 1)
    let a24 = cases.as_array().unwrap().iter().find(|c| c["name"] == "a24").unwrap()["prompt"].as_str().unwrap().to_owned();
    let p = tokenizer.tokenize(&a24, PromptSyntax::A1111).unwrap();
    println!("a24: {} tokens in {} chunks: {a24}", p.token_count, p.chunks.len());
    for (k, c) in p.chunks.iter().enumerate() {
        let end = c.ids.iter().skip(1).position(|&i| i == 49407).map_or(77, |e| e + 2);
        let shown: Vec<String> = (0..end)
            .map(|i| {
                let text = tokenizer.token_text(c.ids[i]).unwrap_or_default();
                let w = if c.weights[i] != 1.0 { format!("×{}", c.weights[i]) } else { String::new() };
                format!("{i}:{}:{text}{w}", c.ids[i])
            })
            .collect();
        println!("chunk {k}: {} (EOS to 76)", shown.join(" "));
    }
    assert!(compared >= 30 && refused >= 1);
}

/// A1111's emphasis with exact (f64) means, on the reference's encoder output `hidden` [k,77,D].
fn emphasis_f64(hidden: &[f32], weights: &[f32]) -> Vec<f32> {
    let chunk = hidden.len() / weights.len() * 77;
    let mut out = Vec::with_capacity(hidden.len());
    for (h, w) in hidden.chunks(chunk).zip(weights.chunks(77)) {
        let d = chunk / 77;
        let before = h.iter().map(|&v| v as f64).sum::<f64>() / chunk as f64;
        let z: Vec<f64> = h.iter().enumerate().map(|(i, &v)| v as f64 * w[i / d] as f64).collect();
        let after = z.iter().sum::<f64>() / chunk as f64;
        out.extend(z.iter().map(|v| (v * (before / after)) as f32));
    }
    out
}

/// The conditioning of every case (row 1 of `encode_prompts` with an empty negative prompt):
/// the encoder's output before the weights against the reference's (`hidden`), and after them
/// against A1111's float32 emphasis (`cond`) and the same with exact means.
#[test]
fn conditioning_equals_the_reference_on_tract_and_ort_cpu() {
    let mut g = Golden::open();
    let cases = g.json("cases");
    let art = artifact();
    for ep in [Ep::Tract, Ep::Cpu] {
        let runtime = Runtime::new(RuntimeOptions { ep, ..Default::default() }).unwrap();
        let mut p = Pipeline::load(art.clone(), &runtime, VideoShape { frames: 1, height: 64, width: 64 }, |_| {}).unwrap();
        let mut worst = [(0f32, String::new()), (0f32, String::new()), (0f32, String::new())];
        let mut n = 0;
        for case in cases.as_array().unwrap().iter().filter(|c| c["group"] != "loop" && !c["error"].as_bool().unwrap()) {
            let (name, prompt) = (case["name"].as_str().unwrap(), case["prompt"].as_str().unwrap());
            let clip_skip = case["clip_skip"].as_u64().unwrap() as usize;
            let tokens = p.tokenize_prompt(prompt, syntax(case)).unwrap();
            let empty = p.tokenize_prompt("", syntax(case)).unwrap();
            let cond = |p: &mut Pipeline, t: &TokenizedPrompt| {
                let ctx = p.encode_prompts(&empty, t, clip_skip).unwrap();
                ctx[ctx.len() / 2..].to_vec()
            };
            let weighted = cond(&mut p, &tokens);
            let mut unweighted = tokens.clone();
            unweighted.chunks.iter_mut().for_each(|c| c.weights.iter_mut().for_each(|w| *w = 1.0));
            let hidden = cond(&mut p, &unweighted);
            let want_cond = g.f32(&format!("{name}__cond"));
            let mut checks = Vec::new();
            if case["group"] != "diffusers" {
                let (want_hidden, w) = (g.f32(&format!("{name}__hidden")), g.f32(&format!("{name}__weights")));
                let exact = emphasis_f64(want_hidden.as_slice().unwrap(), w.as_slice().unwrap());
                checks.push((Deviation::of(&hidden, want_hidden.as_slice().unwrap()), ENCODER_TOLERANCE, "encoder output (no weights)"));
                checks.push((Deviation::of(&weighted, &exact), ENCODER_TOLERANCE, "cond vs exact-mean emphasis"));
            }
            checks.push((Deviation::of(&weighted, want_cond.as_slice().unwrap()), EMPHASIS_TOLERANCE, "cond vs A1111 f32 emphasis"));
            for (k, (d, tol, what)) in checks.into_iter().enumerate() {
                assert!(d.relative() <= tol, "{ep} {name} {prompt:?} clip skip {clip_skip}, {what}: {d}");
                if d.relative() > worst[k].0 {
                    worst[k] = (d.relative(), format!("{name}: {d}"));
                }
            }
            n += 1;
        }
        println!("{ep:>5}: {n} prompts");
        for (what, (rel, at)) in ["encoder output before weights", "cond vs emphasis with exact means", "cond vs A1111's float32 emphasis"].iter().zip(&worst) {
            println!("{ep:>5}   {what:<36} worst {rel:.2e} relative ({at})");
        }
    }
}

#[test]
fn four_steps_with_a_long_weighted_prompt_and_an_embedding_in_the_negative_equal_the_reference() {
    let mut g = Golden::open();
    let cases = g.json("cases");
    let case = cases.as_array().unwrap().iter().find(|c| c["group"] == "loop").unwrap().clone();
    let (prompt, negative) = (case["prompt"].as_str().unwrap(), case["negative_prompt"].as_str().unwrap());
    let clip_skip = g.i64("loop__clip_skip").first().copied().unwrap() as usize;
    let (init, final_ref, context_ref) = (g.f32("loop__init_latents"), g.f32("loop__final_latents"), g.f32("loop__context"));
    let steps = g.i64("loop__timesteps").len();
    let guidance = g.f32("loop__guidance").first().copied().unwrap();
    let shape = VideoShape { frames: init.shape()[2], height: init.shape()[3] * 8, width: init.shape()[4] * 8 };
    let art = artifact();
    for ep in [Ep::Tract, Ep::Cpu] {
        let runtime = Runtime::new(RuntimeOptions { ep, ..Default::default() }).unwrap();
        let mut p = Pipeline::load_for_tokens(art.clone(), &runtime, shape, context_ref.shape()[1], |_| {}).unwrap();
        let (neg, pos) = (p.tokenize_prompt(negative, PromptSyntax::A1111).unwrap(), p.tokenize_prompt(prompt, PromptSyntax::A1111).unwrap());
        assert_eq!(flat(&pos).0, g.i64("loop__cond_ids").as_slice().unwrap());
        assert_eq!(flat(&neg).0, g.i64("loop__uncond_ids").as_slice().unwrap()[..77]);
        let ctx = p.encode_prompts(&neg, &pos, clip_skip).unwrap();
        let d = Deviation::of(&ctx, context_ref.as_slice().unwrap());
        println!("{ep:>5} context (2, {}, D), uncond padded to 2 chunks: {d}", ctx.len() / 2 / art.context_dim());
        assert!(d.relative() <= EMPHASIS_TOLERANCE, "{ep}: {d}");
        let latents = p.sample_with(&ctx, init.as_slice().unwrap().to_vec(), &Sampling::ddim(steps, guidance), &mut animatediff_runtime::noise::SplitMix::new(0), |_, _| {}).unwrap();
        let d = Deviation::of(&latents, final_ref.as_slice().unwrap());
        println!("{ep:>5} final latents after {steps} DDIM steps: {d}");
        assert!(d.relative() <= LOOP_TOLERANCE, "{ep}: {d}");
    }
}
