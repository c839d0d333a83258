//! Prompts end to end through the binaries, on the fixture set: `build-graph --embedding` bakes
//! textual-inversion embeddings in, and `animate` finds their trigger words (any case) in the
//! negative prompt; A1111 weights, long prompts and CLIP skip run; wrong embeddings, CLIP skips and
//! weights are errors naming the file or the flag. (The numbers against the reference are
//! `tests/prompt_parity.rs`'s.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn failed(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn build_graph(set: &animatediff_fixtures::FixtureSet, out: &Path, embeddings: &[String]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_build-graph"));
    c.args(["--base", set.path("base.safetensors").to_str().unwrap()]);
    c.args(["--motion-module", set.path("mm_v2.ckpt").to_str().unwrap()]);
    for e in embeddings {
        c.args(["--embedding", e]);
    }
    c.args(["--no-golden", "--quiet", "--out", out.to_str().unwrap()]).output().unwrap()
}

/// The fixture set in a new temporary directory, and the path of one of its embedding files.
fn fixtures() -> (tempfile::TempDir, animatediff_fixtures::FixtureSet) {
    let dir = tempfile::tempdir().unwrap();
    let set = animatediff_fixtures::write_fixture_set(&dir.path().join("fixtures"), animatediff_fixtures::DEFAULT_SEED).unwrap();
    (dir, set)
}

fn embedding(set: &animatediff_fixtures::FixtureSet, name: &str) -> String {
    set.path(&format!("embeddings/{name}")).display().to_string()
}

struct Animate {
    model: PathBuf,
    dir: PathBuf,
}

impl Animate {
    /// Runs a 4-frame 64×64 2-step video; returns stderr and the final latents.
    fn run(&self, name: &str, args: &[&str]) -> (Output, Vec<f32>) {
        let latents = self.dir.join(format!("{name}.npy"));
        let out = Command::new(env!("CARGO_BIN_EXE_animate"))
            .args(["--model", self.model.to_str().unwrap(), "--frames", "4", "--width", "64", "--height", "64", "--steps", "2", "--seed", "3"])
            .args(["--out", self.dir.join(format!("{name}.gif")).to_str().unwrap(), "--latents-out", latents.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let values = if out.status.success() { ndarray_npy::read_npy::<_, ndarray::ArrayD<f32>>(&latents).unwrap().iter().copied().collect() } else { Vec::new() };
        (out, values)
    }
}

#[test]
fn embeddings_weights_long_prompts_and_clip_skip_end_to_end() {
    let (dir, set) = fixtures();
    let e = |name: &str| embedding(&set, name);
    let model = dir.path().join("artifact");
    ok(&build_graph(&set, &model, &[e("easyneg.pt"), format!("{}:mystyle", e("style.safetensors"))]));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    let recorded = &manifest["inputs"]["embeddings"];
    assert_eq!((recorded[0]["token"].as_str(), recorded[0]["vectors"].as_u64(), recorded[0]["first_id"].as_i64()), (Some("easyneg"), Some(3), Some(49408)));
    assert_eq!((recorded[1]["token"].as_str(), recorded[1]["vectors"].as_u64(), recorded[1]["first_id"].as_i64()), (Some("mystyle"), Some(1), Some(49411)));
    assert_eq!(recorded[0]["sha256"].as_str().map(str::len), Some(64));

    let a = Animate { model, dir: dir.path().to_path_buf() };
    let prompt = ["--prompt", "a (red:1.3) circle, [blurry], mystyle"];
    let (o, with) = a.run("with", &[&prompt[..], &["--negative", "easyneg, lowres"]].concat());
    ok(&o);
    let (o, upper) = a.run("upper", &[&prompt[..], &["--negative", "EasyNeg, lowres"]].concat());
    ok(&o);
    assert_eq!(with, upper, "trigger words match in any case");
    let (o, without) = a.run("without", &[&prompt[..], &["--negative", "lowres"]].concat());
    ok(&o);
    assert_ne!(with, without, "the embedding changes the negative conditioning");

    // a 3-chunk prompt runs; the summary says so
    let long = ["fox"; 160].join(" "); // one token each: 75 + 75 + 10
    let (o, _) = a.run("long", &["--prompt", &long]);
    assert!(ok(&o).contains("prompt 3 chunks"), "{}", String::from_utf8_lossy(&o.stderr));
    // plain truncates and says so
    let (o, _) = a.run("plain", &["--prompt", &long, "--prompt-syntax", "plain"]);
    assert!(ok(&o).contains("keeps the first 75"), "{}", String::from_utf8_lossy(&o.stderr));

    // CLIP skip: the fixture's text encoder has 2 layers
    let (o, skip2) = a.run("skip2", &[&prompt[..], &["--clip-skip", "2"]].concat());
    ok(&o);
    let (o, comfy) = a.run("comfy", &[&prompt[..], &["--clip-skip", "-2"]].concat());
    ok(&o);
    assert_eq!(skip2, comfy, "ComfyUI's -2 is A1111's 2");
    let (o, _) = a.run("skip3", &[&prompt[..], &["--clip-skip", "3"]].concat());
    let err = failed(&o);
    assert!(err.contains("--clip-skip 3") && err.contains("1 (the last layer) to 2"), "{err}");

    // a weight that is not a number: an error under a1111, text under plain
    let (o, _) = a.run("badweight", &["--prompt", "a (circle:1.2.3)"]);
    let err = failed(&o);
    assert!(err.contains("\"1.2.3\"") && err.contains("not a number"), "{err}");
    let (o, _) = a.run("plainweight", &["--prompt", "a (circle:1.2.3)", "--prompt-syntax", "plain"]);
    ok(&o);
}

#[test]
fn wrong_embeddings_are_refused_naming_the_file() {
    let (dir, set) = fixtures();
    let e = |name: &str| embedding(&set, name);
    let out = dir.path().join("artifact");
    let err = failed(&build_graph(&set, &out, &[e("wide.safetensors")]));
    assert!(err.contains("wide.safetensors") && err.contains("width 64") && err.contains("48 wide"), "{err}");
    let err = failed(&build_graph(&set, &out, &[e("parameterdict.pt")]));
    assert!(err.contains("parameterdict.pt") && err.contains("ParameterDict"), "{err}");
    let err = failed(&build_graph(&set, &out, &[e("easyneg.pt"), format!("{}:EASYNEG", e("style.safetensors"))]));
    assert!(err.contains("EASYNEG") && err.contains("easyneg.pt"), "{err}");
    assert!(!out.exists(), "nothing written");
}
