//! Hostile arguments and files given to the binaries (issue 16): every numeric flag of `animate`
//! and `build-graph` is range-checked as it is parsed, so a NaN, an infinity or a size that
//! would allocate terabytes fails at once, naming the flag and the accepted range; the same values
//! in a prompt config name the file and key; a prompt config nested 200 000 deep is refused in
//! well under a second; a `--latents-in` whose header lies is refused before its data is read;
//! `--out FILE/sub` says that FILE is a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(bin: &str, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let o = Command::new(bin).env("ANIMATEDIFF_CACHE", std::env::temp_dir().join("hostile-args-no-cache")).args(args).output().unwrap();
    (o, start.elapsed())
}

/// Runs and expects exit `code` within two seconds; returns stderr.
fn refused(bin: &str, args: &[&str], code: i32) -> String {
    let (o, took) = run(bin, args);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
    assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
    e
}

const ANIMATE: &str = env!("CARGO_BIN_EXE_animate");
const BUILD_GRAPH: &str = env!("CARGO_BIN_EXE_build-graph");

#[test]
fn animate_refuses_bad_numbers_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gif");
    let base = ["--model", "/no/such/model", "--prompt", "a cat", "--out", s(&out)];
    for (flag, value, says) in [
        ("--guidance", "nan", "from 0 to 100"),
        ("--guidance", "inf", "from 0 to 100"),
        ("--guidance", "-inf", "from 0 to 100"),
        ("--guidance", "1e39", "from 0 to 100"),
        ("--width", "1048576", "multiple of 8 from 8 to 2048"),
        ("--height", "8192", "multiple of 8 from 8 to 2048"),
        ("--width", "0", "multiple of 8 from 8 to 2048"),
        ("--width", "100", "multiple of 8 from 8 to 2048"),
        ("--frames", "0", "from 1 to 4096"),
        ("--frames", "18446744073709551615", "from 1 to 4096"),
        ("--steps", "0", "from 1 to 1000"),
        ("--steps", "1000000", "from 1 to 1000"),
        ("--fps", "0", "from 1 to 100"),
        ("--fps", "4294967296", "from 1 to 100"),
        ("--seed", "-1", "leave --seed out for a random seed"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let e = refused(ANIMATE, &args, 2);
        assert!(e.contains(flag) && e.contains(value) && e.contains(says), "{flag} {value}: {e}");
        assert!(!e.contains("no/such/model"), "the flag is refused before the model is opened: {e}");
    }
    assert!(!out.exists());
}

#[test]
fn build_graph_refuses_bad_numbers_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("art");
    let base = ["--base", "/no/such/base.safetensors", "--motion-module", "/no/such/mm.ckpt", "--out", s(&out)];
    for (flag, value, says) in [
        ("--frames", "0", "from 1 to 4096"),
        ("--width", "12", "multiple of 8 from 8 to 2048"),
        ("--height", "1048576", "multiple of 8 from 8 to 2048"),
        ("--opset", "5", "from 17 to 99"),
        ("--opset", "-1", "from 17 to 99"),
        ("--lora", "/no/such/lora.safetensors:nan", "not a finite number"),
        ("--lora", "/no/such/lora.safetensors:inf", "not a finite number"),
        ("--lora", "/no/such/lora.safetensors:1e9", "from -100 to 100"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let e = refused(BUILD_GRAPH, &args, 2);
        assert!(e.contains(flag) && e.contains(says), "{flag} {value}: {e}");
    }
    assert!(!out.exists());
}

#[test]
fn prompt_config_numbers_name_the_file_and_key_before_the_model_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (body, key) in [
        ("  guidance_scale: .nan\n", "`guidance_scale` NaN"),
        ("  guidance_scale: .inf\n", "`guidance_scale` inf"),
        ("  W: 1048576\n  H: 1048576\n", "`W` 1048576"),
        ("  steps: 0\n", "`steps` 0"),
        ("  L: 100000\n", "`L` 100000"),
    ] {
        let cfg = dir.path().join("prompts.yaml");
        std::fs::write(&cfg, format!("- prompt: [a cat]\n{body}")).unwrap();
        let e = refused(ANIMATE, &["--model", "/no/such/model", "--config", s(&cfg), "--out", s(&out)], 1);
        assert!(e.contains("prompts.yaml: entry 0: ") && e.contains(key), "{body}: {e}");
    }
}

#[test]
fn deep_prompt_configs_are_refused_in_well_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("deep.yaml");
    for n in [20_000, 200_000] {
        for text in ["[".repeat(n), "{a: ".repeat(n), "- ".repeat(n), format!("- prompt:\n  - {}", "[".repeat(n))] {
            std::fs::write(&cfg, text).unwrap();
            let start = Instant::now();
            let e = refused(ANIMATE, &["--model", "/no/such/model", "--config", s(&cfg), "--out", s(&dir.path().join("out"))], 1);
            assert!(e.contains("deep.yaml: line") && e.contains("deeper than 32"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(1), "{n} levels: {:?}", start.elapsed());
        }
    }
}

/// A micro artifact built once (the micro fixture set builds in about half a second).
fn artifact() -> &'static Path {
    static ART: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ART.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let set = animatediff_fixtures::write_fixture_set_with(dir.path(), animatediff_fixtures::DEFAULT_SEED, &animatediff_fixtures::TinyArch::micro()).unwrap();
        let out = dir.path().join("artifact");
        let (o, _) = run(
            BUILD_GRAPH,
            &["--base", s(&set.path("base.safetensors")), "--motion-module", s(&set.path("mm_v2.ckpt")), "--no-golden", "--quiet", "--out", s(&out)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (dir, out)
    })
    .1
}

#[test]
fn latents_in_is_checked_before_its_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let lat = dir.path().join("lat.npy");
    let animate = |extra: &[&str]| {
        let mut args = vec!["--model", s(artifact()), "--prompt", "x", "--frames", "2", "--width", "16", "--height", "16", "--steps", "1"];
        args.extend(["--latents-in", s(&lat), "--quiet", "--out"]);
        args.extend(extra);
        refused(ANIMATE, &args, 1)
    };
    let out = dir.path().join("x.gif");
    // a 2 KB file whose header claims 35 TB
    std::fs::write(&lat, animatediff_fixtures::npy::v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 1048576, 1048576), }", &[0; 2000])).unwrap();
    let e = animate(&[s(&out)]);
    assert!(e.contains("--latents-in") && e.contains("lat.npy") && e.contains("[1, 4, 2, 1048576, 1048576]"), "{e}");
    // the right shape, too few bytes
    std::fs::write(&lat, animatediff_fixtures::npy::v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 2, 2), }", &[0; 12])).unwrap();
    let e = animate(&[s(&out)]);
    assert!(e.contains("lat.npy") && e.contains("holds 12 bytes of data"), "{e}");
    // NaN and infinite values
    for bad in [f32::NAN, f32::INFINITY] {
        let mut data: Vec<u8> = (0..32).flat_map(|_| 0.5f32.to_le_bytes()).collect();
        data[20..24].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&lat, animatediff_fixtures::npy::v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 2, 2), }", &data)).unwrap();
        let e = animate(&[s(&out)]);
        assert!(e.contains("lat.npy") && e.contains("value 5") && e.contains("finite"), "{e}");
    }
    assert!(!out.exists());
}

#[test]
fn out_below_a_file_says_the_parent_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let e = refused(BUILD_GRAPH, &["--base", "/no/such/base.safetensors", "--motion-module", "/no/such/mm.ckpt", "--out", s(&file.join("sub"))], 1);
    assert!(e.contains("notes.txt is a file, not a directory") && !e.contains("File exists"), "{e}");
    for out in [file.join("sub.gif"), file.join("sub.webp"), file.join("frames"), file.join("a/b.gif")] {
        let e = refused(ANIMATE, &["--model", "/no/such/model", "--prompt", "x", "--out", s(&out)], 1);
        assert!(e.contains("notes.txt is a file, not a directory") && !e.contains("File exists"), "{}: {e}", out.display());
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
