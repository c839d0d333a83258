//! The `animate` binary on the demo model: outputs (GIF, WebP, PNG frames, MP4) decode back to the
//! right frame count, size and frame rate, an MP4 close to the PNG frames and with BT.601 signalled; the same seed gives the same frames; latents round-trip through .npy; prompt
//! configs run as a batch; providers that are missing are errors unless falling back is asked
//! for (and then reported); bad input fails clearly and leaves no output file.

use std::path::Path;
use std::process::{Command, Output};

mod mp4_check;

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

/// The PNG frames `frame_0000.png`, ... of a directory, as RGB.
fn png_frames(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| image::open(dir.join(format!("frame_{i:04}.png"))).unwrap().to_rgb8().into_raw()).collect()
}

#[test]
fn demo_mp4_decodes_back_close_to_the_png_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (mp4, pngs) = (dir.path().join("demo.mp4"), dir.path().join("frames"));
    ok(&animate(&cache, &["--demo", "--seed", "1", "--steps", "4", "--fps", "10", "--quiet", "--out", s(&mp4)]));
    ok(&animate(&cache, &["--demo", "--seed", "1", "--steps", "4", "--quiet", "--out", s(&pngs)]));
    let v = mp4_check::read(&mp4);
    let size = std::fs::metadata(&mp4).unwrap().len();
    println!("demo.mp4: {size} bytes, {} track(s), {}x{}, timescale {}, durations {:?}, sync {:?}, SPS {:?}", v.tracks, v.width, v.height, v.timescale, v.durations, v.sync, v.sps);
    assert_eq!((v.tracks, v.width, v.height, v.durations.len()), (1, 64, 64, 16));
    assert!(v.durations.iter().all(|&d| v.timescale == 10 * d), "10 fps exactly: {} / {:?}", v.timescale, v.durations);
    assert!(v.sync[0], "starts with a keyframe");
    assert_eq!((v.sps.width, v.sps.height), (64, 64));
    assert!(v.sps.level_idc <= 11, "the level of 64x64 at 10 fps (1 or 1.1), not a bitrate's: {}", v.sps.level_idc);
    assert_eq!(v.sps.colour, Some((false, 6, 6, 6)), "BT.601 limited range signalled in the SPS");
    let want = png_frames(&pngs, 16);
    assert_eq!(v.frames.len(), 16, "decoded frames");
    let psnr: Vec<f64> = v.frames.iter().zip(&want).map(|(f, w)| mp4_check::psnr(&f.rgb, w)).collect();
    let all = mp4_check::psnr(&v.frames.iter().flat_map(|f| f.rgb.clone()).collect::<Vec<_>>(), &want.concat());
    println!("PSNR against the PNG frames at the default quality: {all:.2} dB (frames {:.1?})", psnr);
    assert!(v.frames.iter().all(|f| (f.width, f.height) == (64, 64)));
    assert!(all >= 33.0 && psnr.iter().all(|&p| p >= 30.0), "{all} {psnr:?}");
}

/// `w`×`h` frames of a grey texture (luma detail) over smooth colour (chroma that 4:2:0 keeps),
/// moving one pixel a frame.
fn moving_gradient(w: usize, h: usize, n: usize) -> Vec<animatediff_runtime::Frame> {
    let px = |i: usize, x: usize, y: usize| {
        let wave = 60.0 * ((x + i) as f32 / 4.0).sin() * (y as f32 / 3.0).cos();
        [(90.0 + x as f32 + wave) as u8, (128.0 + wave) as u8, (90.0 + 2.0 * y as f32 + wave) as u8]
    };
    let frame = |i| animatediff_runtime::Frame { width: w, height: h, rgb: (0..h).flat_map(|y| (0..w).flat_map(move |x| px(i, x, y))).collect() };
    (0..n).map(frame).collect()
}

#[test]
fn mp4_sizes_not_multiple_of_16_fps_and_quality() {
    let dir = tempfile::tempdir().unwrap();
    let frames = moving_gradient(40, 24, 9);
    let mut results = Vec::new();
    for quality in [1, animatediff_cli::video::DEFAULT_QUALITY, 100] {
        let path = dir.path().join(format!("q{quality}.mp4"));
        animatediff_cli::video::write(std::fs::File::create(&path).unwrap(), &frames, 7, quality).unwrap();
        let v = mp4_check::read(&path);
        assert_eq!((v.width, v.height, v.sps.width, v.sps.height), (40, 24, 40, 24), "cropped to the exact size");
        assert!(v.frames.iter().all(|f| (f.width, f.height) == (40, 24)));
        assert_eq!((v.frames.len(), v.durations.len()), (9, 9));
        assert!(v.durations.iter().all(|&d| v.timescale == 7 * d), "7 fps: {} / {:?}", v.timescale, v.durations);
        assert_eq!((v.sync[0], v.sps.colour), (true, Some((false, 6, 6, 6))));
        let psnr = mp4_check::psnr(&v.frames.iter().flat_map(|f| f.rgb.clone()).collect::<Vec<_>>(), &frames.iter().flat_map(|f| f.rgb.clone()).collect::<Vec<_>>());
        let size = std::fs::metadata(&path).unwrap().len();
        println!("40x24, quality {quality}: {size} bytes, PSNR {psnr:.2} dB");
        results.push((psnr, size));
    }
    assert!(results.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "higher quality: higher PSNR, larger file: {results:?}");
    assert!(results[1].0 > 38.0 && results[2].0 > 43.0, "{results:?}");
    let e = animatediff_cli::video::write(std::io::Cursor::new(Vec::new()), &moving_gradient(31, 24, 1), 8, 80).unwrap_err();
    assert!(e.contains("31x24") && e.contains("even"), "{e}");
}

#[test]
fn mp4_flags_and_paths_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (mp4, gif) = (dir.path().join("x.mp4"), dir.path().join("x.gif"));
    for bad in ["0", "101", "high"] {
        let o = animate(&cache, &["--demo", "--quality", bad, "--out", s(&mp4)]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(&format!("'{bad}' for '--quality")) && e.contains("from 1 to 100"), "{e}");
    }
    let e = failed(&animate(&cache, &["--demo", "--quality", "90", "--out", s(&gif)]));
    assert!(e.contains("--quality applies to MP4 output"), "{e}");
    std::fs::create_dir(&mp4).unwrap();
    let e = failed(&animate(&cache, &["--demo", "--out", s(&mp4)]));
    assert!(e.contains("x.mp4: is a directory"), "{e}");
    assert!(!gif.exists() && !cache.exists(), "refused before the demo model was built");
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
