//! The `animate` binary on the demo model: outputs decode back to the right frame count, size and
//! frame rate; the same seed gives the same frames; latents round-trip through .npy; prompt
//! configs run as a batch; providers that are missing are errors unless falling back is asked
//! for (and then reported); bad input fails clearly and leaves no output file.

use std::path::Path;
use std::process::{Command, Output};

fn animate(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_animate")).env("ANIMATEDIFF_CACHE", cache).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn failed(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected failure, got {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(e.contains("animate: error:"), "{e}");
    e
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn demo_outputs_decode_back() {
    use image::AnimationDecoder;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let gif = dir.path().join("demo.gif");
    let webp = dir.path().join("demo.webp");
    let pngs = dir.path().join("frames");
    ok(&animate(&cache, &["--demo", "--seed", "1", "--steps", "4", "--fps", "10", "--quiet", "--out", s(&gif)]));
    ok(&animate(&cache, &["--demo", "--seed", "1", "--steps", "4", "--fps", "10", "--quiet", "--out", s(&webp)]));
    ok(&animate(&cache, &["--demo", "--seed", "1", "--steps", "4", "--quiet", "--out", s(&pngs)]));

    let frames = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&gif).unwrap()))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 16);
    for f in &frames {
        assert_eq!(f.buffer().dimensions(), (64, 64));
        assert_eq!(f.delay().numer_denom_ms(), (100, 1), "10 fps = 100 ms per frame");
    }
    let frames = image::codecs::webp::WebPDecoder::new(std::io::BufReader::new(std::fs::File::open(&webp).unwrap()))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 16);
    assert_eq!(frames[0].buffer().dimensions(), (64, 64));
    let (n, d) = frames[0].delay().numer_denom_ms();
    assert_eq!(n / d, 100);
    let mut names: Vec<_> = std::fs::read_dir(&pngs).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 16);
    assert_eq!(names[0], "frame_0000.png");
    let first = image::open(pngs.join("frame_0000.png")).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (64, 64));
    // lossless WebP frames equal the PNG frames
    assert_eq!(frames[0].buffer().pixels().map(|p| [p[0], p[1], p[2]]).collect::<Vec<_>>(), first.pixels().map(|p| p.0).collect::<Vec<_>>());
}

#[test]
fn demo_variants_build_and_run() {
    // the personalised demo model and the random fixture set: each built once into its own cache entry
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for v in ["personalized", "random"] {
        let out = dir.path().join(format!("{v}.gif"));
        ok(&animate(&cache, &["--demo-model", v, "--seed", "2", "--steps", "2", "--quiet", "--out", s(&out)]));
        assert!(out.is_file());
    }
    let mut names: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("demo-personalized-") && names[1].starts_with("demo-random-"), "{names:?}");
}

#[test]
fn same_seed_same_frames_and_latents_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let lat = dir.path().join("latents.npy");
    ok(&animate(&cache, &["--demo", "--seed", "42", "--steps", "3", "--quiet", "--out", s(&a), "--latents-out", s(&lat)]));
    ok(&animate(&cache, &["--demo", "--seed", "42", "--steps", "3", "--quiet", "--out", s(&b)]));
    for i in 0..16 {
        let n = format!("frame_{i:04}.png");
        assert_eq!(std::fs::read(a.join(&n)).unwrap(), std::fs::read(b.join(&n)).unwrap(), "{n}");
    }
    let l: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&lat).unwrap();
    assert_eq!(l.shape(), &[1, 4, 16, 8, 8]);
    // zero further steps are not allowed, but starting from given latents is
    ok(&animate(&cache, &["--demo", "--latents-in", s(&lat), "--steps", "2", "--quiet", "--out", s(&c)]));
    let e = failed(&animate(&cache, &["--demo", "--latents-in", s(&lat), "--frames", "8", "--quiet", "--out", s(&dir.path().join("d"))]));
    assert!(e.contains("latents.npy") && e.contains("[1, 4, 16, 8, 8]") && e.contains("[1, 4, 8, 8, 8]"), "{e}");
}

#[test]
fn prompt_config_runs_as_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = dir.path().join("prompts.yaml");
    std::fs::write(
        &cfg,
        "- dreambooth_path: models/DreamBooth_LoRA/toonyou_beta3.safetensors\n  seed: [1, 2]\n  steps: 2\n  guidance_scale: 7.5\n  prompt:\n    - \"a red circle moving left\"\n    - \"a blue square, moving up!\"\n  n_prompt:\n    - \"worst quality\"\n",
    )
    .unwrap();
    let out = dir.path().join("batch");
    let log = ok(&animate(&cache, &["--demo", "--config", s(&cfg), "--quiet", "--out", s(&out)]));
    assert!(log.contains("ignoring dreambooth_path"), "{log}");
    let mut names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["000-a-red-circle-moving-left.gif", "001-a-blue-square-moving-up.gif"]);

    std::fs::write(&cfg, "- prompt: [a]\n  guidance_scael: 7\n").unwrap();
    let e = failed(&animate(&cache, &["--demo", "--config", s(&cfg), "--quiet", "--out", s(&dir.path().join("none"))]));
    assert!(e.contains("prompts.yaml") && e.contains("guidance_scael"), "{e}");
    assert!(!dir.path().join("none").exists());
}

#[test]
fn providers_are_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("x.gif");
    // ONNX Runtime CPU (library installed by tools/setup.sh)
    ok(&animate(&cache, &["--demo", "--ep", "cpu", "--steps", "2", "--seed", "3", "--quiet", "--out", s(&out)]));
    assert!(out.is_file());
    // the CPU-only library has no CUDA: an error listing what is available…
    let out2 = dir.path().join("y.gif");
    let e = failed(&animate(&cache, &["--demo", "--ep", "cuda", "--steps", "2", "--quiet", "--out", s(&out2)]));
    assert!(e.contains("`cuda` is not available") && e.contains("Available here: tract, cpu") && e.contains("--ep-fallback"), "{e}");
    assert!(!out2.exists());
    // …unless falling back is asked for, which is reported
    let log = ok(&animate(&cache, &["--demo", "--ep", "tensorrt", "--ep-fallback", "--steps", "2", "--quiet", "--out", s(&out2)]));
    assert!(log.contains("falling back to cpu"), "{log}");
    assert!(out2.is_file());
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out.gif");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--steps".into(), "2".into(), "--quiet".into(), "--out".into(), s(&out).into()];
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        animate(&cache, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let e = failed(&run(&["--model", s(&dir.path().join("no-such-model")), "--prompt", "x"]));
    assert!(e.contains("no-such-model") && e.contains("no such model directory"), "{e}");
    // refused as the flag is parsed (clap's usage error, exit 2), before anything loads
    let o = run(&["--demo", "--width", "100"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("'100' for '--width") && e.contains("multiple of 8"), "{e}");
    let e = failed(&run(&["--demo", "--frames", "40"]));
    assert!(e.contains("--frames 40") && e.contains("1 to 32"), "{e}");
    // a manifest from another version
    ok(&run(&["--demo"]));
    std::fs::remove_file(&out).unwrap();
    let built: Vec<_> = std::fs::read_dir(&cache).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    assert_eq!(built.len(), 1, "one cached demo artifact: {built:?}");
    assert!(built[0].file_name().unwrap().to_string_lossy().starts_with(&format!("demo-base-{}-", env!("CARGO_PKG_VERSION"))), "{built:?}");
    let art = built[0].join("artifact");
    let copy = dir.path().join("old-artifact");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&art).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let m = std::fs::read_to_string(copy.join("manifest.json")).unwrap().replace("\"artifact_version\": 1", "\"artifact_version\": 99");
    std::fs::write(copy.join("manifest.json"), m).unwrap();
    let e = failed(&run(&["--model", s(&copy), "--prompt", "x"]));
    assert!(e.contains("manifest.json") && e.contains("artifact version 99") && e.contains("rebuild"), "{e}");
    assert!(!out.exists(), "no output after a failure");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty());
}
