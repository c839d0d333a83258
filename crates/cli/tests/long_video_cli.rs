//! `animate`'s long-video and prompt-travel flags end to end on the committed micro artifact
//! (`graphs/micro_v2`, v2 module: 32 positions): `--context`, `--context-length`,
//! `--context-overlap`, `--context-fuse`, `--closed-loop`, `--prompt-at`, and the prompt-config
//! keys `context`, `context_length`, `context_overlap`, `context_fuse`, `closed_loop`,
//! `prompt_map`. Errors name the flag or the key. (The numbers against the reference are
//! `tests/context_parity.rs`'s; the demo's motion is `long_video.rs`'s.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../graphs/micro_v2")
}

fn animate(dir: &Path, name: &str, args: &[&str]) -> (Output, Vec<f32>) {
    let latents = dir.join(format!("{name}.npy"));
    let out = Command::new(env!("CARGO_BIN_EXE_animate"))
        .args(["--model", model().to_str().unwrap(), "--width", "64", "--height", "64", "--steps", "2", "--seed", "5"])
        .args(["--out", dir.join(format!("{name}.gif")).to_str().unwrap(), "--latents-out", latents.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let values = if out.status.success() { ndarray_npy::read_npy::<_, ndarray::ArrayD<f32>>(&latents).unwrap().iter().copied().collect() } else { Vec::new() };
    (out, values)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stderr(o)
}

fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure: {}", stderr(o));
    stderr(o)
}

#[test]
fn more_frames_than_the_module_takes_need_context_and_then_run_with_both_methods() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = failed(&animate(d, "no", &["--frames", "40", "--prompt", "a cat"]).0);
    assert!(e.contains("--frames 40") && e.contains("1 to 32 frames at once") && e.contains("--context uniform"), "{e}");
    for (name, method) in [("uniform", "uniform"), ("freenoise", "freenoise")] {
        let (o, latents) = animate(d, name, &["--frames", "40", "--prompt", "a cat", "--context", method, "--context-length", "8", "--context-overlap", "2"]);
        let e = ok(&o);
        assert!(e.contains(&format!("40 frames 64x64")) && e.contains(&format!("{method} windows of 8 overlapping 2 (pyramid)")), "{e}");
        assert_eq!(latents.len(), 4 * 40 * 64);
        assert!(latents.iter().all(|v| v.is_finite()));
        assert_eq!(std::fs::read(d.join(format!("{name}.gif"))).unwrap()[..3], *b"GIF");
    }
    // flat fusing and a closed loop change the result; a window over every frame is the plain run
    let (_, pyramid) = animate(d, "p", &["--frames", "20", "--prompt", "a cat", "--context", "uniform", "--context-length", "8"]);
    let (_, flat) = animate(d, "f", &["--frames", "20", "--prompt", "a cat", "--context", "uniform", "--context-length", "8", "--context-fuse", "flat"]);
    let (_, looped) = animate(d, "l", &["--frames", "20", "--prompt", "a cat", "--context", "uniform", "--context-length", "8", "--closed-loop"]);
    assert_ne!(pyramid, flat);
    assert_ne!(pyramid, looped);
    let (_, plain) = animate(d, "plain", &["--frames", "12", "--prompt", "a cat"]);
    for method in ["uniform", "freenoise"] {
        let (_, one) = animate(d, "one", &["--frames", "12", "--prompt", "a cat", "--context", method]);
        assert_eq!(one, plain, "{method}: one window of every frame must equal the plain run");
    }
}

#[test]
fn context_settings_out_of_range_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = failed(&animate(d, "a", &["--frames", "40", "--prompt", "x", "--context", "uniform", "--context-length", "33"]).0);
    assert!(e.contains("--context-length 33") && e.contains("1 to 32"), "{e}");
    let e = failed(&animate(d, "b", &["--frames", "40", "--prompt", "x", "--context", "uniform", "--context-overlap", "16"]).0);
    assert!(e.contains("--context-overlap 16"), "{e}");
    let e = failed(&animate(d, "c", &["--frames", "40", "--prompt", "x", "--context-length", "8"]).0);
    assert!(e.contains("need --context"), "{e}");
    let e = failed(&animate(d, "d", &["--frames", "40", "--prompt", "x", "--context", "sliding"]).0);
    assert!(e.contains("sliding") && e.contains("uniform or freenoise"), "{e}");
    let e = failed(&animate(d, "e", &["--frames", "5000", "--prompt", "x", "--context", "uniform"]).0);
    assert!(e.contains("from 1 to 4096"), "{e}");
}

#[test]
fn prompt_travel_from_flags_and_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let travel = ["--frames", "40", "--context", "uniform", "--context-length", "16", "--prompt-at", "0:a red cat", "--prompt-at", "20:a blue dog"];
    let (o, moving) = animate(d, "travel", &travel);
    assert!(ok(&o).contains("2 keyframes"));
    let (_, still) = animate(d, "still", &["--frames", "40", "--context", "uniform", "--prompt", "a red cat"]);
    assert_ne!(moving, still, "the second keyframe changes the video");
    // one keyframe is the plain prompt for every frame
    let (_, one) = animate(d, "one", &["--frames", "40", "--context", "uniform", "--prompt-at", "0:a red cat"]);
    let rel = one.iter().zip(&still).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / still.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(rel < 1e-5, "one keyframe vs --prompt: {rel}");
    // errors name --prompt-at
    let e = failed(&animate(d, "x", &["--frames", "16", "--prompt-at", "16:late"]).0);
    assert!(e.contains("--prompt-at 16") && e.contains("0 to 15"), "{e}");
    let e = failed(&animate(d, "y", &["--frames", "16", "--prompt-at", "3:a", "--prompt-at", "3:b"]).0);
    assert!(e.contains("--prompt-at 3") && e.contains("same frame"), "{e}");
    let e = failed(&animate(d, "z", &["--frames", "16", "--prompt-at", "no colon"]).0);
    assert!(e.contains("FRAME:TEXT"), "{e}");
    let e = failed(&animate(d, "w", &["--frames", "16", "--prompt", "a", "--prompt-at", "0:b"]).0);
    assert!(e.contains("cannot be used with"), "{e}");

    // the same video from a prompt config
    let cfg = d.join("travel.yaml");
    std::fs::write(
        &cfg,
        "- prompt_map: {0: a red cat, \"20\": a blue dog}\n  seed: 5\n  steps: 2\n  W: 64\n  H: 64\n  L: 40\n  context: uniform\n  context_length: 16\n",
    )
    .unwrap();
    let out = d.join("batch");
    let o = Command::new(env!("CARGO_BIN_EXE_animate"))
        .args(["--model", model().to_str().unwrap(), "--config", cfg.to_str().unwrap(), "--out", &format!("{}/", out.display())])
        .output()
        .unwrap();
    let e = ok(&o);
    assert!(e.contains("2 keyframes") && e.contains("uniform windows of 16"), "{e}");
    assert!(std::fs::read_dir(&out).unwrap().count() == 1);
    for (text, key) in [
        ("- prompt: [a]\n  prompt_map: {0: b}\n", "not both"),
        ("- prompt_map: {x: b}\n", "`prompt_map` key"),
        ("- prompt_map: {}\n", "`prompt_map` is empty"),
        ("- prompt: [a]\n  context: sliding\n", "`context` unknown context method"),
        ("- prompt: [a]\n  context_length: 0\n", "`context_length` 0"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_animate"))
            .args(["--model", model().to_str().unwrap(), "--config", cfg.to_str().unwrap(), "--out", &format!("{}/", d.join("bad").display())])
            .output()
            .unwrap();
        let e = failed(&o);
        assert!(e.contains("travel.yaml") && e.contains(key), "{text}: {e}");
    }
}
