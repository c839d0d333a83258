//! Bad input gives errors that name the file, the key and what was expected against what was
//! found, and never panics: malicious pickles, truncated or corrupt containers, wrong shapes,
//! missing keys, unknown versions, unsupported dtypes.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use animatediff_fixtures::{self as fx, TinyArch, Version};
use animatediff_formats::{ComponentKind, Error, LoadOptions, Lora, MotionModule, SdCheckpoint, TensorFile};
use animatediff_onnx::fixtures;

/// A zip laid out like a torch checkpoint whose pickle is `pickle`.
fn torch_zip_with_pickle(path: &std::path::Path, pickle: &[u8]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", o).unwrap();
    z.write_all(pickle).unwrap();
    z.start_file("archive/version", o).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn malicious_pickle_is_refused_by_name_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let path = dir.path().join("evil.ckpt");
    // What `torch.load(weights_only=False)` would execute: os.system("touch <marker>").
    let cmd = format!("touch {}", marker.display());
    let mut p = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    p.extend((cmd.len() as u32).to_le_bytes());
    p.extend(cmd.as_bytes());
    p.extend(b"q\x01\x85q\x02Rq\x03.");
    torch_zip_with_pickle(&path, &p);
    let err = TensorFile::open(&path).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(&err, Error::DisallowedGlobal { global, .. } if global == "posix.system"));
    assert!(msg.contains("evil.ckpt") && msg.contains("posix.system"));
    assert!(!marker.exists());

    // The same refusal through every entry point that reads a file.
    assert!(MotionModule::open(&path, None).unwrap_err().to_string().contains("posix.system"));
    assert!(Lora::open(&path).unwrap_err().to_string().contains("posix.system"));
    assert!(SdCheckpoint::open(&path, &LoadOptions::default()).unwrap_err().to_string().contains("posix.system"));

    // Other classic payloads: builtins.eval via STACK_GLOBAL, a Lightning callback class.
    for (payload, global) in [
        (&b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R."[..], "builtins.eval"),
        (&b"\x80\x02cpytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\n)R."[..], "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    ] {
        torch_zip_with_pickle(&path, payload);
        let e = TensorFile::open(&path).unwrap_err().to_string();
        assert!(e.contains(global), "{e}");
    }
}

/// Opens every truncation of `bytes` (and some corruptions): errors are fine, panics are not.
fn never_panics(name: &str, bytes: &[u8], dir: &std::path::Path) -> (usize, usize) {
    let path = dir.join(name);
    let mut cuts: Vec<usize> = (0..64).chain((0..200).map(|i| i * bytes.len() / 200)).collect();
    cuts.push(bytes.len() - 1);
    let mut errors = 0;
    let mut opened = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        let mut b = bytes[..cut].to_vec();
        if i % 3 == 1 && !b.is_empty() {
            // also flip a byte somewhere in what remains
            let at = (i * 7919) % b.len();
            b[at] ^= 0x5a;
        }
        std::fs::write(&path, &b).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let f = TensorFile::open(&path)?;
            for k in f.keys().map(str::to_owned).collect::<Vec<_>>() {
                if f.info(&k).unwrap().dtype.is_float() {
                    f.read_f32(&k)?;
                }
            }
            Ok::<_, Error>(())
        }));
        match r {
            Err(_) => panic!("{name} truncated at {cut} bytes panicked"),
            Ok(Err(e)) => {
                assert!(e.to_string().contains(name), "error must name the file: {e}");
                errors += 1
            }
            Ok(Ok(())) => opened += 1,
        }
    }
    (errors, opened)
}

#[test]
fn truncated_or_corrupt_files_error_and_never_panic() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    for src in ["mm_v1.ckpt", "mm_v3.safetensors", "lora.safetensors"] {
        let bytes = std::fs::read(set.path(src)).unwrap();
        let (errors, opened) = never_panics(src, &bytes, dir.path());
        println!("{src}: {errors} truncated/corrupted variants refused with an error, {opened} still readable");
        assert!(errors > 200);
    }
    // Garbage and empty files.
    for (name, bytes) in [("empty.safetensors", vec![]), ("garbage.safetensors", vec![0xffu8; 1000]), ("garbage.ckpt", b"PK\x03\x04garbage".to_vec())] {
        std::fs::write(dir.path().join(name), &bytes).unwrap();
        let e = TensorFile::open(dir.path().join(name)).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
    // A zip whose pickle is garbage.
    let p = dir.path().join("badpickle.ckpt");
    torch_zip_with_pickle(&p, b"\x80\x02\xfe\xfe\xfe");
    let e = TensorFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("badpickle.ckpt") && e.contains("opcode"), "{e}");
    // Missing file.
    let e = TensorFile::open(dir.path().join("nope.safetensors")).unwrap_err().to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
}

#[test]
fn storage_smaller_than_its_tensor_is_an_error() {
    // A .ckpt whose storage entry is shorter than the tensor claims.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.ckpt");
    let t = fx::Tensor { name: "w".into(), shape: vec![4, 4], data: fx::Data::F32(vec![1.0; 16]) };
    fx::torch_zip::write(&path, &[t], fx::torch_zip::Wrapper::None).unwrap();
    // rewrite with a 3-element storage but the same pickle
    let f = std::fs::File::open(&path).unwrap();
    let mut a = zip::ZipArchive::new(f).unwrap();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut a.by_name("archive/data.pkl").unwrap(), &mut pkl).unwrap();
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", o).unwrap();
    z.write_all(&pkl).unwrap();
    z.start_file("archive/data/0", o).unwrap();
    z.write_all(&[0u8; 12]).unwrap();
    z.finish().unwrap();
    let e = TensorFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("short.ckpt") && e.contains("tensor `w`") && e.contains("expected 64"), "{e}");
}

#[test]
fn missing_key_and_wrong_shape_name_file_key_expected_found() {
    let set = fixtures();
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let unet = ckpt.unet.as_ref().unwrap();
    let e = unet.read("down_blocks.7.resnets.0.conv1.weight").unwrap_err().to_string();
    assert!(e.contains("base.safetensors") && e.contains("down_blocks.7.resnets.0.conv1.weight") && e.contains("UNet"), "{e}");
    let e = unet.read_checked("conv_in.weight", &[320, 4, 3, 3]).unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("base.safetensors"));
    assert!(e.contains("model.diffusion_model.input_blocks.0.0.weight"), "names the key as stored: {e}");
    assert!(e.contains("[320, 4, 3, 3]") && e.contains("[32, 4, 3, 3]"), "{e}");
}

#[test]
fn unsupported_dtype_names_file_and_key() {
    let set = fixtures();
    let f = TensorFile::open(set.path("base.safetensors")).unwrap();
    let e = f.read_f32("cond_stage_model.transformer.text_model.embeddings.position_ids").unwrap_err().to_string();
    assert!(e.contains("base.safetensors") && e.contains("position_ids") && e.contains("I64") && e.contains("F32"), "{e}");
}

#[test]
fn unknown_motion_module_version() {
    let dir = tempfile::tempdir().unwrap();
    let arch = TinyArch::default();
    // A v3-shaped module whose tables have 20 positions, and one without tables (AnimateLCM-style).
    let mut mm = fx::motion::motion_module(1, Version::V3, &arch);
    for t in mm.iter_mut().filter(|t| t.name.ends_with(".pe")) {
        let c = t.shape[2];
        *t = fx::Tensor { name: t.name.clone(), shape: vec![1, 20, c], data: fx::Data::F32(vec![0.5; 20 * c]) };
    }
    let p = dir.path().join("odd.safetensors");
    fx::tensors::write_safetensors(&p, &mm).unwrap();
    let e = MotionModule::open(&p, None).unwrap_err().to_string();
    assert!(e.contains("odd.safetensors") && e.contains("length 20") && e.contains("--motion-version"), "{e}");
    assert!(MotionModule::open(&p, Some(animatediff_formats::MotionVersion::V3)).is_ok());

    mm.retain(|t| !t.name.ends_with(".pe"));
    let p = dir.path().join("nope.safetensors");
    fx::tensors::write_safetensors(&p, &mm).unwrap();
    let e = MotionModule::open(&p, None).unwrap_err().to_string();
    assert!(e.contains("no `pos_encoder.pe` tables"), "{e}");
    let e = "v4".parse::<animatediff_formats::MotionVersion>().unwrap_err();
    assert!(e.contains("v4") && e.contains("v1, v2 or v3"));
}

#[test]
fn files_of_the_wrong_kind_say_what_they_are() {
    let set = fixtures();
    let e = SdCheckpoint::open(set.path("lora.safetensors"), &LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("lora.safetensors") && e.contains("--lora"), "{e}");
    let e = SdCheckpoint::open(set.path("mm_v2.ckpt"), &LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("--motion-module"), "{e}");
    let e = MotionModule::open(set.path("base.safetensors"), None).unwrap_err().to_string();
    assert!(e.contains("not an AnimateDiff motion module"), "{e}");
    let e = Lora::open(set.path("mm_v1.safetensors")).unwrap_err().to_string();
    assert!(e.contains("no LoRA tensors"), "{e}");
    let e = SdCheckpoint::open(set.path("."), &LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("not a diffusers model folder"), "{e}");
    let e = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions { use_ema: true }).unwrap_err().to_string();
    assert!(e.contains("EMA"), "{e}");
    let _ = ComponentKind::Unet;
}

#[test]
fn lora_with_wrong_shapes_names_the_key() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad_lora.safetensors");
    let d = vec![0x3cu8; 2 * 4 * 7];
    let views = vec![
        ("lora_unet_conv_in.lora_down.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 7], &d).unwrap()),
        ("lora_unet_conv_in.lora_up.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![7, 4], &d).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let unet = ckpt.unet.as_ref().unwrap();
    // Refused when matched against the model (inspect and build-graph alike), not at merge time.
    let e = animatediff_formats::LoraSet::new(vec![(Lora::open(&path).unwrap(), 1.0)], animatediff_formats::LoraScaling::Kohya, &[unet])
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(e.contains("bad_lora.safetensors") && e.contains("lora_unet_conv_in.lora_up.weight") && e.contains("[32, 4, 3, 3]"), "{e}");
}

#[test]
fn architectures_that_cannot_be_built_are_errors() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("arch.json");
    for (json, what) in [
        (r#"{"vae": {"block_out_channels": []}}"#, "no decoder up blocks"),
        (r#"{"text_encoder": {"max_position_embeddings": 64}}"#, "at least 77 positions"),
        (r#"{"unet": {"attention_levels": [true]}}"#, "4 block widths and 1 attention flags"),
    ] {
        std::fs::write(&p, json).unwrap();
        let a = animatediff_formats::arch::apply_overrides(&animatediff_formats::ModelArch::default(), &p).unwrap();
        let e = a.validate(&set.path("arch.json")).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
}
