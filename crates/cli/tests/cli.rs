//! The `build-graph` and `inspect` binaries: exit codes, messages, quiet output.

use std::process::Command;

fn fixtures() -> (tempfile::TempDir, animatediff_fixtures::FixtureSet) {
    let dir = tempfile::tempdir().unwrap();
    let set = animatediff_fixtures::write_fixture_set(dir.path(), animatediff_fixtures::DEFAULT_SEED).unwrap();
    (dir, set)
}

#[test]
fn build_graph_binary_succeeds_quietly_and_fails_clearly() {
    let (dir, set) = fixtures();
    let out = dir.path().join("artifact");
    let ok = Command::new(env!("CARGO_BIN_EXE_build-graph"))
        .args(["--base", set.path("base.safetensors").to_str().unwrap()])
        .args(["--lora", &format!("{}:0.5", set.path("lora.safetensors").display())])
        .args(["--motion-module", set.path("mm_v3.safetensors").to_str().unwrap()])
        .args(["--frames", "16", "--height", "64", "--width", "64", "--quiet", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(ok.stdout.is_empty() && ok.stderr.is_empty(), "--quiet prints nothing");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["motion_version"], "v3");
    assert_eq!(manifest["inputs"]["loras"][0]["multiplier"], 0.5);

    let bad = Command::new(env!("CARGO_BIN_EXE_build-graph"))
        .args(["--base", set.path("base.safetensors").to_str().unwrap()])
        .args(["--motion-module", set.path("mm_v1.ckpt").to_str().unwrap()])
        .args(["--motion-version", "v2", "--out", dir.path().join("x").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("build-graph: error:") && err.contains("mm_v1.ckpt") && err.contains("mid-block"), "{err}");
    assert!(!dir.path().join("x").exists());

    // the library's error names the option; the binary adds the flag that fixes it
    let frames = Command::new(env!("CARGO_BIN_EXE_build-graph"))
        .args(["--base", set.path("base.safetensors").to_str().unwrap()])
        .args(["--motion-module", set.path("mm_v2.ckpt").to_str().unwrap()])
        .args(["--frames", "40", "--out", dir.path().join("x").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(frames.status.code(), Some(1));
    let err = String::from_utf8_lossy(&frames.stderr);
    assert!(err.contains("frames 40") && err.contains("1 to 32") && err.contains("build-graph: pass --frames 1 to 32"), "{err}");

    let usage = Command::new(env!("CARGO_BIN_EXE_build-graph")).args(["--motion-version", "v9"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("v1, v2 or v3"));
}

#[test]
fn inspect_json_reports_what_the_files_hold() {
    let (_dir, set) = fixtures();
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(["--base", set.path("base_diffusers").to_str().unwrap()])
        .args(["--personalized", set.path("personalized.safetensors").to_str().unwrap()])
        .args(["--lora", set.path("lora.safetensors").to_str().unwrap(), "--lora-scaling", "kohya"])
        .args(["--motion-module", set.path("mm_v2_diffusers.safetensors").to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["motion_module"]["version"], "v2");
    assert_eq!(r["motion_module"]["layout"], "Diffusers");
    assert_eq!(r["motion_module"]["resnet_groupnorm"], "per_frame", "named as in the manifest");
    assert_eq!(r["architecture"]["unet"]["block_out_channels"], serde_json::json!([32, 64, 128, 128]));
    assert_eq!(r["loras"]["weights_changed"], 209);
    assert_eq!(r["loras"]["files"][0]["unmatched_keys"], serde_json::json!([]));
}
