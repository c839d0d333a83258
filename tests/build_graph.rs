//! `build-graph` behaviour beyond numerics: sharded external data (no file over the cap), fixed
//! shapes, byte-for-byte determinism, manifest contents, and bad input that fails with a clear
//! error and leaves no partial artifact.

use std::path::{Path, PathBuf};

use animatediff_build::{build, BuildOptions, Error};
use animatediff_formats::{LoraScaling, LoraSpec, MotionVersion};
use animatediff_onnx::{fixtures, goldens_dir, variant_options, Deviation};
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

fn options(out: &Path, mm: &str) -> BuildOptions {
    variant_options("base", mm, out)
}

fn golden(name: &str) -> NpzReader<std::fs::File> {
    NpzReader::new(std::fs::File::open(goldens_dir().join(format!("{name}.npz"))).unwrap()).unwrap()
}

/// Runs the UNet of `dir` with tract on the base_v2 golden inputs.
fn tract_unet(dir: &Path) -> (Vec<f32>, ArrayD<f32>) {
    use tract_onnx::prelude::*;
    let mut g = golden("base_v2");
    let names = ["unet_sample", "unet_timestep", "unet_encoder_hidden_states"];
    let arrays: Vec<ArrayD<f32>> = names.iter().map(|n| g.by_name(n).unwrap()).collect();
    let mut m = tract_onnx::onnx().model_for_path(dir.join("unet.onnx")).unwrap();
    for (i, a) in arrays.iter().enumerate() {
        m.set_input_fact(i, f32::fact(a.shape()).into()).unwrap();
    }
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let inputs: TVec<TValue> = arrays.iter().map(|a| Tensor::from_shape(a.shape(), a.as_slice().unwrap()).unwrap().into()).collect();
    let out = plan.run(inputs).unwrap();
    (out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect(), g.by_name("unet_noise_pred").unwrap())
}

fn no_partial_left(parent: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".partial"))
        .collect();
    assert!(left.is_empty(), "temporary directories left behind: {left:?}");
}

#[test]
fn external_data_is_sharded_under_the_cap_and_still_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sharded");
    let cap = 8 << 20;
    let report = build(&BuildOptions { max_file_bytes: cap, ..options(&out, "v2") }).unwrap();
    let shards = report.manifest.graphs.unet.external_data.clone().unwrap();
    assert!(shards.len() >= 5, "{shards:?}");
    assert_eq!(shards[0], "unet.onnx.data");
    assert_eq!(shards[1], "unet.onnx.data.1");
    for s in &shards {
        let size = std::fs::metadata(out.join(s)).unwrap().len();
        assert!(size <= cap, "{s}: {size} bytes");
        assert!(report.manifest.files.contains_key(s), "{s} hashed in the manifest");
    }
    let (got, reference) = tract_unet(&out);
    let d = Deviation::of(&got, reference.as_slice().unwrap());
    println!("{} shards of ≤ {cap} bytes; tract unet vs golden: {d}", shards.len());
    assert!(d.relative() < 1e-4);
}

#[test]
fn fixed_shapes_are_written_into_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fixed");
    let report = build(&BuildOptions { frames: Some(16), height: Some(64), width: Some(64), ..options(&out, "v2") }).unwrap();
    let json = |shape: &[animatediff_runtime::manifest::Dim]| serde_json::to_value(shape).unwrap();
    assert_eq!(json(&report.manifest.graphs.unet.inputs[0].shape), serde_json::json!(["batch", 4, 16, 8, 8]));
    assert_eq!(json(&report.manifest.graphs.vae_decoder.outputs[0].shape), serde_json::json!(["N", 3, 64, 64]));
    // tract sees the fixed dims without being told
    use tract_onnx::prelude::Framework;
    let m = tract_onnx::onnx().model_for_path(out.join("unet.onnx")).unwrap();
    let fact = format!("{:?}", m.input_fact(0).unwrap());
    assert!(fact.contains("16,8,8"), "{fact}");
    let (got, reference) = tract_unet(&out);
    let d = Deviation::of(&got, reference.as_slice().unwrap());
    println!("fixed-shape unet vs golden: {d}");
    assert!(d.relative() < 1e-4);
}

#[test]
fn builds_are_byte_for_byte_deterministic() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for run in 0..2 {
        let out = dir.path().join(format!("run{run}"));
        let opts = BuildOptions {
            personalized: Some(set.path("personalized.safetensors")),
            loras: vec![LoraSpec { path: set.path("lora.safetensors"), multiplier: 0.8 }],
            ..options(&out, "v1")
        };
        let r = build(&opts).unwrap();
        hashes.push(r.manifest.files);
    }
    assert_eq!(hashes[0], hashes[1]);
    println!("two builds, identical files: {:?}", hashes[0]);
}

#[test]
fn lora_only_rebuild_reuses_the_stable_weights_and_equals_a_fresh_build() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    // a private copy of the personalised model, changed below
    let personal = dir.path().join("personalized.safetensors");
    std::fs::copy(set.path("personalized.safetensors"), &personal).unwrap();
    let opts = |out: &Path, multiplier: f32| BuildOptions {
        personalized: Some(personal.clone()),
        loras: vec![LoraSpec { path: set.path("lora.safetensors"), multiplier }],
        golden: false,
        ..options(out, "v2")
    };
    let fresh = build(&opts(&dir.path().join("fresh"), 0.6)).unwrap();
    assert_eq!(fresh.reused_bytes, 0);
    let unet = &fresh.manifest.graphs.unet;
    assert_eq!(unet.lora_dependent_data.as_deref(), Some(&["unet.onnx.lora.data".to_owned()][..]));
    assert_eq!(unet.external_data.as_deref(), Some(&["unet.onnx.data".to_owned(), "unet.onnx.lora.data".to_owned()][..]));

    let out = dir.path().join("in_place");
    build(&opts(&out, 0.8)).unwrap();
    let at_08 = animatediff_runtime::sha256_file(&out.join("unet.onnx.lora.data")).unwrap();
    let again = build(&opts(&out, 0.6)).unwrap();
    let stable = std::fs::metadata(out.join("unet.onnx.data")).unwrap().len();
    assert_eq!(again.reused_bytes, stable, "the stable UNet file is re-used");
    // every file equals the fresh build's, by its actual bytes (the manifest of a rebuild carries
    // the re-used files' hashes over from the previous one)
    let files = &fresh.manifest.files;
    assert_eq!(files, &again.manifest.files);
    for (f, h) in files {
        assert_eq!(&animatediff_runtime::sha256_file(&out.join(f)).unwrap(), h, "{f}");
    }
    assert_ne!(at_08, files["unet.onnx.lora.data"], "the LoRA-dependent weights changed");
    println!("rebuild at 0.6 over 0.8: {stable} bytes re-used, {} files identical to a fresh build", files.len());

    // a changed input (same size, new content and time) is hashed again and nothing is re-used
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut bytes = std::fs::read(&personal).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&personal, &bytes).unwrap();
    let changed = build(&opts(&out, 0.6)).unwrap();
    assert_eq!(changed.reused_bytes, 0);
    assert_eq!(
        changed.manifest.inputs.components.unet[0].sha256,
        animatediff_runtime::sha256_file(&personal).unwrap()
    );
    // nor when the LoRA set differs, or when asked not to
    assert_eq!(build(&BuildOptions { loras: vec![], ..opts(&out, 0.6) }).unwrap().reused_bytes, 0);
    build(&opts(&out, 0.8)).unwrap();
    assert!(build(&opts(&out, 0.6)).unwrap().reused_bytes > 0);
    assert_eq!(build(&BuildOptions { reuse: false, ..opts(&out, 0.8) }).unwrap().reused_bytes, 0);
    no_partial_left(dir.path());
}

#[test]
fn manifest_records_inputs_scheduler_and_io() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    let r = build(&BuildOptions {
        personalized: Some(set.path("personalized.safetensors")),
        loras: vec![LoraSpec { path: set.path("lora.safetensors"), multiplier: 0.8 }],
        lora_scaling: LoraScaling::Kohya,
        ..options(&out, "v1")
    })
    .unwrap();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m, serde_json::to_value(&r.manifest).unwrap());
    assert_eq!(std::fs::read_to_string(out.join("manifest.json")).unwrap(), r.manifest.to_json());
    assert_eq!(m["artifact_version"], 1);
    assert_eq!(m["motion_version"], "v1");
    assert_eq!(m["resnet_groupnorm"], "across_frames");
    assert_eq!(m["max_frames"], 24);
    assert_eq!(m["scheduler"]["beta_schedule"], "linear");
    assert_eq!(m["scheduler"]["steps_offset"], 1);
    assert_eq!(m["scheduler"]["timestep_spacing"], "leading");
    assert_eq!(m["inputs"]["lora_scaling"], "kohya");
    assert_eq!(m["inputs"]["loras"][0]["multiplier"], 0.8);
    assert_eq!(m["inputs"]["loras"][0]["sha256"], set.files["lora.safetensors"].as_str());
    assert_eq!(m["inputs"]["motion_module"]["sha256"], set.files["mm_v1.ckpt"].as_str());
    assert_eq!(m["inputs"]["components"]["unet"][0]["sha256"], set.files["personalized.safetensors"].as_str());
    assert_eq!(m["graphs"]["unet"]["inputs"][1]["name"], "timestep");
    assert_eq!(m["graphs"]["text_encoder"]["outputs"][0]["name"], "last_hidden_state");
    assert_eq!(m["graphs"]["vae_decoder"]["inputs"][0]["name"], "latent_sample");
    for f in ["text_encoder.onnx", "unet.onnx", "unet.onnx.data", "vae_decoder.onnx", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f}");
        assert!(m["files"][f].is_string(), "{f} hashed");
    }
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing_behind() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("art");
    let err = |o: BuildOptions| -> String {
        let e: Error = build(&o).unwrap_err();
        assert!(!out.exists(), "no artifact after a failed build");
        no_partial_left(dir.path());
        e.to_string()
    };
    let e = err(BuildOptions { frames: Some(40), ..options(&out, "v2") });
    assert!(e.contains("frames 40") && e.contains("mm_v2.ckpt") && e.contains("1 to 32"), "{e}");
    let e = err(BuildOptions { frames: Some(25), ..options(&out, "v1") });
    assert!(e.contains("1 to 24"), "{e}");
    let e = err(BuildOptions { width: Some(100), ..options(&out, "v2") });
    assert!(e.contains("width 100") && e.contains("multiple of 8"), "{e}");

    // A personalised file without VAE and no base
    let novae = dir.path().join("novae.safetensors");
    let t = animatediff_fixtures::sd_checkpoint_tensors(1, "p", &Default::default(), &animatediff_fixtures::CheckpointOptions { vae: false, ..Default::default() });
    animatediff_fixtures::tensors::write_safetensors(&novae, &t).unwrap();
    let e = err(BuildOptions { base: None, personalized: Some(novae.clone()), ..options(&out, "v2") });
    assert!(e.contains("novae.safetensors") && e.contains("no VAE") && e.contains("base model"), "{e}");

    // A LoRA whose shapes do not fit fails mid-build: the temporary directory is removed.
    let bad = dir.path().join("bad_lora.safetensors");
    let d = vec![0x3cu8; 2 * 4 * 7];
    safetensors::serialize_to_file(
        vec![
            ("lora_unet_conv_in.lora_down.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 7], &d).unwrap()),
            ("lora_unet_conv_in.lora_up.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![7, 4], &d).unwrap()),
        ],
        None,
        &bad,
    )
    .unwrap();
    let e = err(BuildOptions { loras: vec![LoraSpec { path: bad, multiplier: 1.0 }], ..options(&out, "v2") });
    assert!(e.contains("bad_lora.safetensors") && e.contains("lora_unet_conv_in.lora_up.weight"), "{e}");

    // A LoRA with keys that match nothing: an error unless explicitly allowed
    let stray = dir.path().join("sdxl_lora.safetensors");
    let d = vec![0x3cu8; 2 * 4 * 2];
    safetensors::serialize_to_file(
        vec![
            ("lora_unet_input_blocks_4_1_transformer_blocks_9_attn1_to_q.lora_down.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 2], &d).unwrap()),
            ("lora_unet_input_blocks_4_1_transformer_blocks_9_attn1_to_q.lora_up.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 4], &d).unwrap()),
        ],
        None,
        &stray,
    )
    .unwrap();
    let spec = LoraSpec { path: stray.clone(), multiplier: 1.0 };
    let e = err(BuildOptions { loras: vec![spec.clone()], ..options(&out, "v2") });
    assert!(e.contains("sdxl_lora.safetensors") && e.contains("2 of its keys match no weight") && e.contains("lora_ignore_unmatched"), "{e}");
    let r = build(&BuildOptions { loras: vec![spec], lora_ignore_unmatched: true, ..options(&out, "v2") }).unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    std::fs::remove_dir_all(&out).unwrap();

    // A checkpoint tensor of the wrong shape
    let mut t = animatediff_fixtures::sd_checkpoint_tensors(1, "p", &Default::default(), &Default::default());
    let bad_key = "model.diffusion_model.input_blocks.4.1.proj_in.weight";
    let i = t.iter().position(|t| t.name == bad_key).unwrap();
    t[i] = animatediff_fixtures::Tensor { name: bad_key.into(), shape: vec![64, 32, 1, 1], data: animatediff_fixtures::Data::F32(vec![0.1; 64 * 32]) };
    let wrong = dir.path().join("wrong_shape.safetensors");
    animatediff_fixtures::tensors::write_safetensors(&wrong, &t).unwrap();
    let e = err(BuildOptions { base: Some(wrong), ..options(&out, "v2") });
    assert!(e.contains("wrong_shape.safetensors") && e.contains(bad_key) && e.contains("[64, 32, 1, 1]") && e.contains("[64, 64, 1, 1]"), "{e}");

    // A motion module for another UNet width
    let e = err(BuildOptions { arch: Some(write(dir.path(), "arch.json", r#"{"unet": {"block_out_channels": [32, 64, 64, 128]}}"#)), ..options(&out, "v2") });
    assert!(e.contains("base.safetensors") || e.contains("mm_v2.ckpt"), "{e}");

    // --out pointing at a directory that is not an artifact is never replaced
    let foreign = dir.path().join("photos");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"x").unwrap();
    let e = build(&options(&foreign, "v2")).unwrap_err().to_string();
    assert!(e.contains("not an artifact of ours"), "{e}");
    assert!(foreign.join("holiday.jpg").is_file());
    no_partial_left(dir.path());

    // a previous artifact is replaced
    build(&options(&out, "v2")).unwrap();
    let r = build(&options(&out, "v3")).unwrap();
    assert_eq!(r.manifest.motion_version, MotionVersion::V3);
    let _ = set;
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Operator counts (`domain:op_type` for other domains) and the opsets a written graph imports.
fn operators(model: &Path) -> (std::collections::BTreeMap<String, usize>, Vec<(String, i64)>) {
    use prost::Message;
    let m = onnx_writer::proto::ModelProto::decode(std::fs::read(model).unwrap().as_slice()).unwrap();
    let mut ops = std::collections::BTreeMap::new();
    for n in m.graph.unwrap().node {
        let key = if n.domain.is_empty() { n.op_type } else { format!("{}:{}", n.domain, n.op_type) };
        *ops.entry(key).or_insert(0) += 1;
    }
    (ops, m.opset_import.into_iter().map(|o| (o.domain, o.version)).collect())
}

/// `--attention` writes the operator it names at every UNet and VAE attention site, and the plain
/// form everywhere else (CLIP's causal attention); the manifest records the form.
#[test]
fn attention_forms_write_the_operators_they_name() {
    use onnx_writer::AttentionForm;
    let dir = tempfile::tempdir().unwrap();
    let mut softmax = std::collections::BTreeMap::new();
    for form in [AttentionForm::Plain, AttentionForm::Mha, AttentionForm::Sdpa] {
        let out = dir.path().join(form.as_str());
        let report = build(&BuildOptions { attention: form, ..options(&out, "v2") }).unwrap();
        assert_eq!(report.manifest.attention, form);
        for graph in ["text_encoder", "unet", "vae_decoder"] {
            let (ops, opsets) = operators(&out.join(format!("{graph}.onnx")));
            let count = |op: &str| ops.get(op).copied().unwrap_or(0);
            eprintln!("{form} {graph}: {opsets:?} softmax {} mha {} attention {}", count("Softmax"), count("com.microsoft:MultiHeadAttention"), count("Attention"));
            let sites = if form == AttentionForm::Plain {
                softmax.insert(graph, count("Softmax"));
                count("Softmax")
            } else {
                softmax[graph]
            };
            assert!(sites > 0, "{graph}: no attention");
            let fused = match form {
                AttentionForm::Plain => 0,
                AttentionForm::Mha => count("com.microsoft:MultiHeadAttention"),
                AttentionForm::Sdpa => count("Attention"),
            };
            let ms_imported = opsets.iter().any(|(d, _)| d == onnx_writer::MS_DOMAIN);
            assert_eq!(ms_imported, fused > 0 && form == AttentionForm::Mha, "{form} {graph}: {opsets:?}");
            let want_opset = if form == AttentionForm::Sdpa { 23 } else { 17 };
            assert!(opsets.contains(&(String::new(), want_opset)), "{form} {graph}: {opsets:?}");
            if graph == "text_encoder" || form == AttentionForm::Plain {
                assert_eq!((fused, count("Softmax")), (0, sites), "{form} {graph}");
            } else {
                assert_eq!((fused, count("Softmax")), (sites, 0), "{form} {graph}");
            }
        }
    }
}
