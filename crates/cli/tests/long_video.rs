//! Long videos and prompt travel on the embedded demo model, as the README's example runs them:
//!
//! ```sh
//! animate --demo --frames 48 --context uniform --prompt-at 0:"a red circle moving left" \
//!     --prompt-at 16:"a red circle moving left" --prompt-at 32:"a red circle moving right"
//! ```
//!
//! 48 frames from a motion module trained on 16, in uniform windows of 16 overlapping 4, with the
//! prompt switching from left to right between frames 16 and 32. The demo tracker
//! (`crates/cli/src/motion_check.rs`) must see the object move left over frames 0–16 and right over
//! frames 32–47 for most seeds, and no jump at a window seam (a frame where a window starts or
//! ends) larger than max(2 × the median frame-to-frame jump, 6 px).
//!
//! `cargo test --release -p animatediff-cli --test long_video -- --ignored --nocapture` runs more
//! seeds and prints the table.

use animatediff_build::{build, BuildOptions};
use animatediff_cli::demo;
use animatediff_cli::motion_check;
use animatediff_runtime::noise::torch::TorchGenerator;
use animatediff_runtime::{
    Artifact, ContextOptions, Ep, Pipeline, PromptSyntax, Runtime, RuntimeOptions, SamplePlan, Sampling, TokenizedPrompt, VideoShape,
};

const FRAMES: usize = 48;
const STEPS: usize = 10;

struct Outcome {
    both_halves: bool,
    lost: bool,
    worst_seam: f32,
    limit: f32,
    line: String,
}

fn demo_artifact(dir: &std::path::Path) -> std::path::PathBuf {
    let [base, _, mm, arch] = demo::write_embedded(&dir.join("src")).unwrap();
    let out = dir.join("base");
    build(&BuildOptions { base: Some(base), arch: Some(arch), quiet: true, golden: false, ..BuildOptions::new(&mm, &out) }).unwrap();
    out
}

fn run(p: &mut Pipeline, seed: u64, keys: &[(usize, TokenizedPrompt)], negative: &TokenizedPrompt) -> Outcome {
    let text = p.encode_travel(negative, keys, FRAMES, false, 1).unwrap();
    let mut generator = TorchGenerator::new(seed);
    let noise = p.initial_noise(&mut generator);
    let latents = p.sample_conditioned(&text, noise, &Sampling::ddim(STEPS, demo::DEFAULT_GUIDANCE), &mut generator, |_, _| {}).unwrap();
    let frames = p.decode(&latents, |_| {}).unwrap();
    let (first, second) = (motion_check::track(&frames[..=16]), motion_check::track(&frames[32..]));
    let all = motion_check::track(&frames);
    let jumps: Vec<f32> = all
        .centroids
        .windows(2)
        .map(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt(),
            _ => f32::INFINITY,
        })
        .collect();
    let mut sorted = jumps.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let limit = (2.0 * median).max(6.0);
    // seams: the frames where a window starts or ends (jump from the frame before)
    let fusion = ContextOptions::default().fusion(FRAMES);
    let mut seams: Vec<usize> = fusion.windows.iter().flat_map(|w| [w[0], w[w.len() - 1] + 1]).filter(|&f| f > 0 && f < FRAMES).collect();
    seams.sort_unstable();
    seams.dedup();
    let worst_seam = seams.iter().map(|&f| jumps[f - 1]).fold(0f32, f32::max);
    let line = format!(
        "  seed {seed}: frames 0-16 {:<5} ({:+5.1} px), 32-47 {:<5} ({:+5.1} px); median jump {median:.2} px, worst seam jump {worst_seam:.2} px at seams {seams:?} (limit {limit:.2})",
        first.direction, first.displacement.0, second.direction, second.displacement.0
    );
    Outcome { both_halves: first.direction == "left" && second.direction == "right", lost: all.direction == "lost", worst_seam, limit, line }
}

fn measure(seeds: u64) -> Vec<Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let art = Artifact::open(demo_artifact(dir.path())).unwrap();
    let runtime = Runtime::new(RuntimeOptions { ep: Ep::Tract, ..Default::default() }).unwrap();
    let shape = VideoShape { frames: FRAMES, height: 64, width: 64 };
    let plan = SamplePlan { tokens: 77, context: Some(ContextOptions::default()), per_frame: true };
    let mut p = Pipeline::load_with(art, &runtime, shape, plan, |_| {}).unwrap();
    let tok = |s: &str| p.tokenizer().tokenize(s, PromptSyntax::A1111).unwrap();
    let keys = vec![(0, tok("a red circle moving left")), (16, tok("a red circle moving left")), (32, tok("a red circle moving right"))];
    let negative = tok("");
    (0..seeds).map(|seed| run(&mut p, seed, &keys, &negative)).collect()
}

fn check(outcomes: &[Outcome]) {
    for o in outcomes {
        println!("{}", o.line);
    }
    let hits = outcomes.iter().filter(|o| o.both_halves).count();
    println!("{hits}/{} videos move left then right as the keyframes say", outcomes.len());
    assert!(2 * hits > outcomes.len(), "most seeds must move left over frames 0-16 and right over 32-47: {hits}/{}", outcomes.len());
    for o in outcomes.iter().filter(|o| !o.lost) {
        assert!(o.worst_seam <= o.limit, "a jump at a window seam: {}", o.line);
    }
}

/// 4 seeds, 10 DDIM steps (about a minute in a debug build).
#[test]
fn the_demo_moves_left_then_right_across_window_seams_without_jumps() {
    check(&measure(4));
}

/// 16 seeds, for the README's figures.
#[test]
#[ignore]
fn the_demo_moves_left_then_right_more_seeds() {
    check(&measure(16));
}
