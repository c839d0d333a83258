//! A hostile or broken artifact is refused with an error naming `manifest.json`, the field and
//! what is accepted, never a panic, a file read outside the artifact or an allocation sized by
//! an unchecked value: manifest paths that leave the directory, truncated or changed files,
//! scheduler and architecture values out of range, lying golden bundles, and out-of-range
//! settings of the runtime's API (what an application embedding it passes).

use std::io::Write;
use std::path::{Path, PathBuf};

use animatediff_runtime::manifest::Manifest;
use animatediff_runtime::{check, check_sampling, Artifact, ClipTokenizer, Error, Sampler, SamplerOptions, Sampling, Setting, VideoShape};

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/micro_v2")
}

/// A private copy of the committed micro artifact (tests change its files).
fn copy_artifact() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(committed()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    (tmp, dir)
}

fn manifest_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The error `Artifact::open` gives after `edit` changed the manifest's JSON.
fn open_edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let (_tmp, dir) = copy_artifact();
    let mut m = manifest_json(&dir);
    edit(&mut m);
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let e = Artifact::open(&dir).expect_err("the edited manifest must be refused").to_string();
    println!("{e}");
    assert!(e.contains("manifest.json"), "names the manifest: {e}");
    e
}

#[test]
fn manifest_paths_that_leave_the_artifact_are_refused_by_field_and_value() {
    type Edit = fn(&mut serde_json::Value, &str);
    let fields: [(&str, Edit); 6] = [
        ("graphs.text_encoder.file", |m, v| m["graphs"]["text_encoder"]["file"] = v.into()),
        ("tokenizer.file", |m, v| m["tokenizer"]["file"] = v.into()),
        ("graphs.unet.external_data[0]", |m, v| m["graphs"]["unet"]["external_data"][0] = v.into()),
        ("golden.file", |m, v| m["golden"]["file"] = v.into()),
        ("graphs.unet.lora_dependent_data[0]", |m, v| m["graphs"]["unet"]["lora_dependent_data"] = serde_json::json!([v])),
        ("files", |m, v| {
            m["files"][v] = "0".repeat(64).into();
        }),
    ];
    for (field, edit) in fields {
        for value in ["../outside/text_encoder.onnx", "/etc/passwd", "..", "sub/unet.onnx", "C:evil.onnx", "a\\..\\b", ""] {
            let e = open_edited(|m| edit(m, value));
            assert!(e.contains(&format!("field `{field}`")) && e.contains(&format!("{value:?}")), "{field} = {value:?}: {e}");
            assert!(e.contains("plain file name inside the artifact directory"), "{e}");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_artifact_is_refused_and_one_inside_is_not() {
    let (tmp, dir) = copy_artifact();
    let outside = tmp.path().join("secret.json");
    std::fs::rename(dir.join("tokenizer.json"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("tokenizer.json")).unwrap();
    let e = Artifact::open(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("symlink out of the artifact directory") && e.contains("`tokenizer.file`"), "{e}");
    // a link that stays inside the directory (de-duplicated storage) is fine
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::rename(&outside, dir.join("tokenizer.real")).unwrap();
    std::os::unix::fs::symlink("tokenizer.real", dir.join("tokenizer.json")).unwrap();
    Artifact::open(&dir).unwrap();
}

#[test]
fn a_truncated_data_file_is_refused_on_open_naming_the_file_and_both_sizes() {
    let (_tmp, dir) = copy_artifact();
    let data = dir.join("unet.onnx.data");
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(size - 1000).unwrap();
    let e = Artifact::open(&dir).unwrap_err().to_string();
    assert!(e.contains("unet.onnx.data") && e.contains(&format!("{} bytes", size - 1000)) && e.contains(&format!("records {size}")), "{e}");
    // a missing one is named too, before any graph is loaded
    std::fs::remove_file(&data).unwrap();
    let e = Artifact::open(&dir).unwrap_err().to_string();
    assert!(e.contains("unet.onnx.data") && e.contains("missing"), "{e}");
}

#[test]
fn a_flipped_byte_keeps_the_size_and_fails_the_hash_check_naming_the_file() {
    let (_tmp, dir) = copy_artifact();
    let data = dir.join("unet.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[4242] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let a = Artifact::open(&dir).unwrap();
    let row = check::verify_files(&a);
    assert!(!row.pass && row.detail.contains("unet.onnx.data") && row.detail.contains("SHA-256"), "{row:?}");
    assert!(!row.detail.contains("unet.onnx,") && !row.detail.contains("tokenizer"), "only the changed file: {row:?}");
}

#[test]
fn artifacts_written_before_sizes_were_recorded_still_open_and_unknown_versions_are_refused() {
    let (_tmp, dir) = copy_artifact();
    let mut m = manifest_json(&dir);
    m.as_object_mut().unwrap().remove("file_sizes");
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let a = Artifact::open(&dir).unwrap();
    assert!(a.manifest.file_sizes.is_empty());
    let e = open_edited(|m| m["artifact_version"] = 7.into());
    assert!(e.contains("artifact version 7 is not supported") && e.contains("version 1"), "{e}");
}

#[test]
fn scheduler_values_out_of_range_are_refused_on_open_naming_the_field() {
    let cases: [(&str, serde_json::Value, &str); 9] = [
        ("steps_offset", 5000.into(), "0 to 999"),
        ("num_train_timesteps", 1.into(), "2 to 100000"),
        ("num_train_timesteps", 0.into(), "2 to 100000"),
        ("beta_start", 0.5.into(), "from beta_start"), // above beta_end: blamed on beta_end
        ("beta_end", 1.5.into(), "below 1"),
        ("beta_start", (-0.1).into(), "above 0"),
        ("beta_schedule", "cosine".into(), "\"linear\" or \"scaled_linear\""),
        ("type", "PNDM".into(), "DDIM"),
        ("eta", 1.into(), "0"),
    ];
    for (field, value, expected) in cases {
        let e = open_edited(|m| m["scheduler"][field] = value.clone());
        let named = if field == "beta_start" && expected == "from beta_start" { "beta_end" } else { field };
        assert!(e.contains(&format!("`scheduler.{named}`")) && e.contains(expected), "{field} = {value}: {e}");
    }
    // NaN cannot be written in JSON; a library user's config can hold it: refused, no panic
    let mut c = animatediff_runtime::SchedulerConfig::animatediff_ddim();
    c.beta_end = f64::NAN;
    assert!(Sampler::new(&c, SamplerOptions::default(), 25).unwrap_err().to_string().contains("scheduler.beta_end"));
    let mut c = animatediff_runtime::SchedulerConfig::animatediff_ddim();
    c.steps_offset = 5000;
    assert!(Sampler::new(&c, SamplerOptions::default(), 25).unwrap_err().to_string().contains("scheduler.steps_offset"));
}

#[test]
fn architecture_and_graph_values_out_of_range_are_refused_on_open_naming_the_field() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 11] = [
        ("architecture.unet.in_channels", |m| m["architecture"]["unet"]["in_channels"] = 0.into()),
        ("max_frames", |m| m["max_frames"] = 100_000_000.into()),
        ("max_frames", |m| m["max_frames"] = 0.into()),
        ("architecture.text_encoder.hidden_size", |m| m["architecture"]["text_encoder"]["hidden_size"] = 0.into()),
        ("architecture.unet.num_attention_heads", |m| m["architecture"]["unet"]["num_attention_heads"] = 0.into()),
        ("architecture.unet.cross_attention_dim", |m| m["architecture"]["unet"]["cross_attention_dim"] = 1_000_000.into()),
        ("architecture", |m| m["architecture"]["unet"]["cross_attention_dim"] = 32.into()),
        ("architecture", |m| m["architecture"]["unet"]["norm_num_groups"] = 5.into()),
        ("architecture.vae.latent_channels", |m| m["architecture"]["vae"]["latent_channels"] = 4096.into()),
        ("graphs.unet.inputs[0].shape[3]", |m| m["graphs"]["unet"]["inputs"][0]["shape"][3] = 0.into()),
        ("tokenizer.eos_token_id", |m| m["tokenizer"]["eos_token_id"] = (-1).into()),
    ];
    for (field, edit) in cases {
        let e = open_edited(edit);
        assert!(e.contains(&format!("`{field}`")) && e.contains("expected"), "{field}: {e}");
    }
    let e = open_edited(|m| m["graphs"]["unet"]["inputs"][0]["shape"][1] = 9.into());
    assert!(e.contains("`graphs.unet.inputs[0].shape[1]` is 9: expected 4, as the architecture"), "{e}");
}

#[test]
fn every_manifest_edit_is_an_error_or_valid_never_a_panic() {
    // what the fuzz target does, on a few hundred structured mutations of the committed manifest
    let text = std::fs::read_to_string(committed().join("manifest.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut paths = Vec::new();
    fn leaves(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
                at.push(k.clone());
                leaves(v, at, out);
                at.pop();
            }),
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
                at.push(i.to_string());
                leaves(v, at, out);
                at.pop();
            }),
            _ => out.push(at.clone()),
        }
    }
    leaves(&base, &mut Vec::new(), &mut paths);
    let values = [serde_json::json!(0), serde_json::json!(-1), serde_json::json!(u64::MAX), serde_json::json!(1e308), serde_json::json!(""), serde_json::json!(null)];
    for path in &paths {
        for v in &values {
            let mut m = base.clone();
            let mut at = &mut m;
            for k in path {
                at = match at {
                    serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                    other => &mut other[k.as_str()],
                };
            }
            *at = v.clone();
            if let Ok(parsed) = Manifest::from_json(&m.to_string()) {
                let _ = parsed.validate();
            }
        }
    }
    assert!(Manifest::from_json(&"[".repeat(100_000)).is_err());
    assert!(Manifest::from_json("\u{0}").is_err());
}

#[test]
fn runtime_settings_out_of_range_are_refused_before_anything_is_loaded() {
    let a = Artifact::open(committed()).unwrap();
    let setting = |r: Result<(), Error>| match r.unwrap_err() {
        Error::Invalid { setting, value, reason } => (setting, format!("{value}: {reason}")),
        other => panic!("{other}"),
    };
    for (w, h) in [(8192, 8192), (1_048_576, 1_048_576), (0, 64), (60, 64)] {
        let (s, msg) = setting(VideoShape { frames: 16, width: w, height: h }.check(&a));
        assert!(matches!(s, Setting::Width | Setting::Height) && msg.contains("8 to 2048 pixels"), "{msg}");
    }
    let (s, msg) = setting(VideoShape { frames: 0, width: 64, height: 64 }.check(&a));
    assert!(s == Setting::Frames && msg.contains("1 to 32"), "{msg}");
    VideoShape { frames: 32, width: 2048, height: 2048 }.check(&a).unwrap();
    for g in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (s, msg) = setting(check_sampling(&a, &Sampling::ddim(25, g)));
        assert!(s == Setting::Guidance && msg.contains("finite"), "{msg}");
    }
    // the official scheduler's first timestep at 1000 steps would be 1000: past its table
    let (s, msg) = setting(check_sampling(&a, &Sampling::ddim(1000, 7.5)));
    assert!(s == Setting::Steps && msg.contains("1 to 999"), "{msg}");
    assert_eq!(setting(check_sampling(&a, &Sampling::ddim(0, 7.5))).0, Setting::Steps);
    check_sampling(&a, &Sampling::ddim(999, 7.5)).unwrap();
    let e = Error::Invalid { setting: Setting::Guidance, value: "NaN".into(), reason: "x".into() };
    assert_eq!(e.to_string(), "Pipeline::sample's scale NaN: x");
}

/// Rewrites the golden bundle with `entry` (name, bytes, deflated) in place of its own.
fn golden_with(dir: &Path, name: &str, bytes: &[u8], deflate: bool) {
    let path = dir.join("golden.npz");
    let mut old = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut entries = Vec::new();
    for i in 0..old.len() {
        let mut e = old.by_index(i).unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        entries.push((e.name().unwrap().to_string(), b));
    }
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    for (n, b) in entries {
        let o = zip::write::SimpleFileOptions::default().compression_method(if n == name { method } else { zip::CompressionMethod::Stored });
        z.start_file(n.as_str(), o).unwrap();
        z.write_all(if n == name { bytes } else { &b }).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn lying_golden_arrays_are_refused_before_they_are_allocated() {
    let (_tmp, dir) = copy_artifact();
    let a = Artifact::open(&dir).unwrap();
    let limit = check::golden_array_limit(&a);
    assert!(limit < 4 << 20, "{limit}");
    // a deflate bomb: 64 MiB of zeros in a few KB
    golden_with(&dir, "unet.sample.npy", &vec![0u8; 64 << 20], true);
    let e = check::read_bundle(&dir.join("golden.npz"), &a).unwrap_err().to_string();
    assert!(e.contains("golden.npz") && e.contains("unet.sample") && e.contains(&limit.to_string()), "{e}");
    // a 35 TB shape in a 100-byte array
    let npy = animatediff_fixtures::npy::v1("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 1048576, 1048576), }", &[0; 16]);
    golden_with(&dir, "unet.sample.npy", &npy, false);
    let e = check::read_bundle(&dir.join("golden.npz"), &a).unwrap_err().to_string();
    assert!(e.contains("unet.sample") && e.contains("needs 35184372088832 bytes"), "{e}");
}

#[test]
fn the_tokenizer_encodes_any_string_to_77_ids() {
    let t = ClipTokenizer::from_file(&committed().join("tokenizer.json")).unwrap();
    for s in ["", "\0\0\0", &"a".repeat(100_000), &"\u{FFFD}\u{10FFFF}\u{200B}".repeat(10_000), "<|endoftext|><|startoftext|>", &"🎞".repeat(5000)] {
        let ids = t.encode(s).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!((ids[0], ids[76]), (49406, 49407));
    }
}
