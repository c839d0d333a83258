//! `animate check --verify`: every file's SHA-256 against the manifest, no graph run; and
//! `animate` refusing a manifest whose paths leave the artifact (issue 16).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private copy of the committed micro artifact.
fn copy_artifact(tmp: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../graphs/micro_v2");
    let dir = tmp.join("model");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

fn animate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_animate")).args(args).output().unwrap()
}

#[test]
fn check_verify_passes_an_intact_artifact_and_names_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_artifact(tmp.path());
    let model = dir.to_str().unwrap();
    let out = animate(&["check", "--model", model, "--verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("files") && stdout.contains("PASS") && stdout.lines().count() == 2, "only the hash row: {stdout}");
    let data = dir.join("unet.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0x80;
    std::fs::write(&data, bytes).unwrap();
    let out = animate(&["check", "--model", model, "--verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success() && report["pass"] == false, "{report}");
    assert!(report["rows"][0]["detail"].as_str().unwrap().contains("unet.onnx.data"), "{report}");
}

#[test]
fn animate_refuses_a_manifest_path_out_of_the_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_artifact(tmp.path());
    let mpath = dir.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap().replace("\"file\": \"tokenizer.json\"", "\"file\": \"/etc/passwd\"");
    std::fs::write(&mpath, text).unwrap();
    let gif = tmp.path().join("o.gif");
    let out = animate(&["--model", dir.to_str().unwrap(), "--prompt", "x", "--steps", "1", "--frames", "2", "--width", "64", "--height", "64", "--out", gif.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("manifest.json") && stderr.contains("`tokenizer.file`") && stderr.contains("/etc/passwd"), "{stderr}");
    assert!(!gif.exists());
}
