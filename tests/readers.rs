//! Every reader on the fixtures: tensor counts, shapes, dtypes, values round-trip, layouts agree.

use animatediff_fixtures::{self as fx, sd15, Component, TinyArch, Version};
use animatediff_formats::{
    arch, ComponentKind, Container, DType, LoadOptions, Lora, LoraScaling, LoraSet, MotionLayout, MotionModule,
    MotionVersion, SdCheckpoint, TensorFile,
};
use animatediff_onnx::{fixtures, max_abs_diff};

fn kind(c: Component) -> ComponentKind {
    match c {
        Component::Unet => ComponentKind::Unet,
        Component::Vae => ComponentKind::Vae,
        Component::TextEncoder => ComponentKind::TextEncoder,
    }
}

/// Checks that `ckpt` holds exactly the fixture's tensors for `role`, under diffusers names.
fn assert_matches_fixture(ckpt: &SdCheckpoint, role: &str, fp16: bool) {
    let pairs = sd15::image_model(fx::DEFAULT_SEED, role, &TinyArch::default());
    for k in [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder] {
        let expected = pairs.iter().filter(|p| kind(p.component) == k).count();
        assert_eq!(ckpt.component(k).unwrap().len(), expected, "{k} tensor count");
    }
    let mut worst = 0f32;
    for p in &pairs {
        let c = ckpt.component(kind(p.component)).unwrap();
        assert_eq!(c.shape(&p.diffusers).unwrap(), p.diffusers_shape.as_slice(), "{}", p.diffusers);
        let got = c.read(&p.diffusers).unwrap();
        let want: Vec<f32> = if fp16 {
            p.values.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        } else {
            p.values.clone()
        };
        worst = worst.max(max_abs_diff(&got, &want));
    }
    println!("{}: {} tensors, max abs diff vs fixture values {worst:e}", ckpt.source.display(), pairs.len());
    assert_eq!(worst, 0.0, "values must round-trip exactly");
}

#[test]
fn single_file_fp32_round_trips() {
    let set = fixtures();
    let file = TensorFile::open(set.path("base.safetensors")).unwrap();
    assert_eq!(file.container(), Container::Safetensors);
    assert_eq!(file.info("model.diffusion_model.input_blocks.0.0.weight").unwrap().dtype, DType::F32);
    assert_eq!(
        file.info("cond_stage_model.transformer.text_model.embeddings.position_ids").unwrap().dtype,
        DType::I64
    );
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    assert!(ckpt.unrecognized.is_empty(), "unrecognized: {:?}", ckpt.unrecognized);
    // schedule buffers and position_ids are read but deliberately ignored
    assert!(ckpt.ignored.iter().any(|k| k == "alphas_cumprod"));
    assert!(ckpt.ignored.iter().any(|k| k.ends_with("position_ids")));
    assert_matches_fixture(&ckpt, "base", false);
}

#[test]
fn single_file_fp16_pruned_round_trips() {
    let set = fixtures();
    let file = TensorFile::open(set.path("personalized.safetensors")).unwrap();
    assert_eq!(file.info("model.diffusion_model.out.2.weight").unwrap().dtype, DType::F16);
    let ckpt = SdCheckpoint::open(set.path("personalized.safetensors"), &LoadOptions::default()).unwrap();
    assert_matches_fixture(&ckpt, "personalized", true);
}

#[test]
fn diffusers_folder_equals_single_file() {
    let set = fixtures();
    let folder = SdCheckpoint::open(set.path("base_diffusers"), &LoadOptions::default()).unwrap();
    assert_matches_fixture(&folder, "base", false);
    let single = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    for k in [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder] {
        let (a, b) = (folder.component(k).unwrap(), single.component(k).unwrap());
        assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>(), "{k} names");
    }
    assert_eq!(folder.configs.len(), 3);
}

#[test]
fn single_file_as_torch_ckpt_with_state_dict_wrapper() {
    // CivitAI .ckpt files are `{"state_dict": {...}}` zip pickles.
    let dir = tempfile::tempdir().unwrap();
    let tensors = fx::sd_checkpoint_tensors(fx::DEFAULT_SEED, "base", &TinyArch::default(), &Default::default());
    let path = dir.path().join("model.ckpt");
    fx::torch_zip::write(&path, &tensors, fx::torch_zip::Wrapper::StateDict).unwrap();
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(file.container(), Container::TorchZip);
    assert_eq!(file.len(), tensors.len());
    let ckpt = SdCheckpoint::open(&path, &LoadOptions::default()).unwrap();
    assert_matches_fixture(&ckpt, "base", false);
}

#[test]
fn ema_weights_are_ignored_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fx::CheckpointOptions { ema: true, ..Default::default() };
    let tensors = fx::sd_checkpoint_tensors(fx::DEFAULT_SEED, "base", &TinyArch::default(), &opts);
    let path = dir.path().join("ema.safetensors");
    fx::tensors::write_safetensors(&path, &tensors).unwrap();

    let plain = SdCheckpoint::open(&path, &LoadOptions::default()).unwrap();
    assert_matches_fixture(&plain, "base", false);
    assert!(plain.ignored.iter().any(|k| k.starts_with("model_ema.diffusion_model")));

    let ema = SdCheckpoint::open(&path, &LoadOptions { use_ema: true }).unwrap();
    let name = "down_blocks.0.resnets.0.conv1.weight";
    let want = tensors
        .iter()
        .find(|t| t.name == "model_ema.diffusion_modelinput_blocks10in_layers2weight")
        .expect("EMA key as LDM writes it");
    assert_eq!(ema.unet.as_ref().unwrap().read(name).unwrap(), want.f32());
    assert_ne!(ema.unet.as_ref().unwrap().read(name).unwrap(), plain.unet.as_ref().unwrap().read(name).unwrap());
}

#[test]
fn personalised_without_vae_takes_the_base_vae() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let opts = fx::CheckpointOptions { vae: false, fp16: true, ..Default::default() };
    let tensors = fx::sd_checkpoint_tensors(fx::DEFAULT_SEED, "personalized", &TinyArch::default(), &opts);
    let path = dir.path().join("novae.safetensors");
    fx::tensors::write_safetensors(&path, &tensors).unwrap();
    let personal = SdCheckpoint::open(&path, &LoadOptions::default()).unwrap();
    assert_eq!(personal.kinds(), vec![ComponentKind::Unet, ComponentKind::TextEncoder]);
    let base = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let merged = personal.over(base);
    assert_eq!(merged.vae.as_ref().unwrap().files(), vec![set.path("base.safetensors")]);
    assert_eq!(merged.unet.as_ref().unwrap().files(), vec![path]);
}

#[test]
fn bf16_and_f64_tensors_widen_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.safetensors");
    let bf: Vec<u8> = [1.5f32, -2.25, 3.0e-3].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
    let f64s: Vec<u8> = [0.1f64, -7.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("a", safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![3], &bf).unwrap()),
        ("b", safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2], &f64s).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(f.info("a").unwrap().dtype, DType::BF16);
    let a = f.read_f32("a").unwrap();
    assert_eq!(a, vec![1.5, -2.25, half::bf16::from_f32(3.0e-3).to_f32()]);
    assert_eq!(f.read_f32("b").unwrap(), vec![0.1f32, -7.0]);
}

#[test]
fn motion_modules_all_versions_both_containers() {
    let set = fixtures();
    let arch = TinyArch::default();
    for v in Version::ALL {
        let want = fx::motion::motion_module(fx::DEFAULT_SEED, v, &arch);
        let mut loaded = Vec::new();
        for ext in ["ckpt", "safetensors"] {
            let path = set.path(&format!("mm_{}.{ext}", v.name()));
            let mm = MotionModule::open(&path, None).unwrap();
            assert_eq!(mm.layout, MotionLayout::Official);
            assert_eq!(mm.version.to_string(), v.name(), "{}", path.display());
            assert_eq!(mm.detected, Some(mm.version));
            assert_eq!(mm.pe_len, Some(v.pe_len()));
            assert_eq!(mm.max_frames(), v.pe_len());
            assert_eq!(mm.has_mid_block, v.has_mid_block());
            let sites = if v.has_mid_block() { 21 } else { 20 };
            assert_eq!(mm.sites.len(), sites);
            assert_eq!(mm.weights.len(), sites * 26, "26 parameters per module (docs/spec.md §2.4)");
            assert!(mm.unrecognized.is_empty());
            for t in want.iter().filter(|t| !t.name.ends_with(".pe")) {
                assert_eq!(mm.weights.shape(&t.name).unwrap(), t.shape.as_slice());
                assert_eq!(mm.weights.read(&t.name).unwrap(), t.f32(), "{}", t.name);
            }
            loaded.push(mm);
        }
        println!("{}: {} sites, PE length {:?}, {} weights, .ckpt == .safetensors", v.name(), loaded[0].sites.len(), loaded[0].pe_len, loaded[0].weights.len());
    }
}

#[test]
fn diffusers_motion_adapter_equals_official() {
    let set = fixtures();
    let official = MotionModule::open(set.path("mm_v2.safetensors"), None).unwrap();
    let diffusers = MotionModule::open(set.path("mm_v2_diffusers.safetensors"), None).unwrap();
    assert_eq!(diffusers.layout, MotionLayout::Diffusers);
    assert_eq!(diffusers.version, MotionVersion::V2);
    assert_eq!(diffusers.pe_len, Some(32));
    assert_eq!(official.weights.names().collect::<Vec<_>>(), diffusers.weights.names().collect::<Vec<_>>());
    for n in official.weights.names() {
        assert_eq!(official.weights.read(n).unwrap(), diffusers.weights.read(n).unwrap(), "{n}");
    }
}

#[test]
fn motion_version_override() {
    let set = fixtures();
    let mm = MotionModule::open(set.path("mm_v1.ckpt"), Some(MotionVersion::V3)).unwrap();
    assert_eq!((mm.version, mm.detected), (MotionVersion::V3, Some(MotionVersion::V1)));
    let e = MotionModule::open(set.path("mm_v1.ckpt"), Some(MotionVersion::V2)).unwrap_err().to_string();
    assert!(e.contains("mm_v1.ckpt") && e.contains("mid-block"), "{e}");
    let e = MotionModule::open(set.path("mm_v2.ckpt"), Some(MotionVersion::V1)).unwrap_err().to_string();
    assert!(e.contains("only v2"), "{e}");
}

#[test]
fn architecture_inferred_from_shapes_equals_arch_json() {
    let set = fixtures();
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let inferred = animatediff_formats::ModelArch {
        unet: arch::infer_unet(ckpt.unet.as_ref().unwrap()).unwrap(),
        text_encoder: arch::infer_text_encoder(ckpt.text_encoder.as_ref().unwrap()).unwrap(),
        vae: arch::infer_vae(ckpt.vae.as_ref().unwrap()).unwrap(),
        motion_module: Default::default(),
    };
    let explicit = arch::apply_overrides(&Default::default(), &set.path("arch.json")).unwrap();
    assert_eq!(inferred, explicit);
    inferred.validate(&set.path("base.safetensors")).unwrap();
    println!("{}", serde_json::to_string(&inferred).unwrap());

    // diffusers configs agree too
    let folder = SdCheckpoint::open(set.path("base_diffusers"), &LoadOptions::default()).unwrap();
    let mut from_folder = inferred.clone();
    arch::apply_diffusers_configs(&mut from_folder, &folder.configs);
    assert_eq!(from_folder, inferred);

    // a partial override changes only what it names; unknown fields are errors naming the file
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("arch.json");
    std::fs::write(&p, r#"{"unet": {"num_attention_heads": 4}}"#).unwrap();
    let o = arch::apply_overrides(&inferred, &p).unwrap();
    assert_eq!(o.unet.num_attention_heads, 4);
    assert_eq!(o.vae, inferred.vae);
    std::fs::write(&p, r#"{"unet": {"heads": 4}}"#).unwrap();
    let e = arch::apply_overrides(&inferred, &p).unwrap_err().to_string();
    assert!(e.contains("arch.json") && e.contains("unet.heads"), "{e}");
    std::fs::write(&p, r#"{"unet": {"num_attention_heads": 7}}"#).unwrap();
    let e = arch::apply_overrides(&inferred, &p).unwrap().validate(&p).unwrap_err().to_string();
    assert!(e.contains("not divisible by num_attention_heads 7"), "{e}");
}

/// W + m·s·(up@down), computed here independently of `LoraSet`.
fn reference_merge(w: &[f32], up: &[f32], down: &[f32], rank: usize, m: f32, s: f32) -> Vec<f32> {
    let out = up.len() / rank;
    let inn = down.len() / rank;
    let mut r = w.to_vec();
    for o in 0..out {
        for i in 0..inn {
            let d: f32 = (0..rank).map(|k| up[o * rank + k] * down[k * inn + i]).sum();
            r[o * inn + i] += m * s * d;
        }
    }
    r
}

#[test]
fn kohya_lora_resolves_and_merges_with_both_scalings() {
    let set = fixtures();
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let (unet, text) = (ckpt.unet.as_ref().unwrap(), ckpt.text_encoder.as_ref().unwrap());
    let lora = Lora::open(set.path("lora.safetensors")).unwrap();
    let res = lora.resolve(&[unet, text]).unwrap();
    assert!(res.unmatched.is_empty(), "{:?}", res.unmatched);
    assert_eq!(res.targets.len(), lora.len());
    let te = res.targets.iter().filter(|t| t.component == ComponentKind::TextEncoder).count();
    println!("LoRA: {} modules ({} UNet, {te} text encoder), all matched", lora.len(), lora.len() - te);
    assert!(res.targets.iter().all(|t| t.rank == fx::lora::RANK && t.alpha == Some(fx::lora::ALPHA)));

    let file = TensorFile::open(set.path("lora.safetensors")).unwrap();
    let cases = [
        (ComponentKind::Unet, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"),
        (ComponentKind::Unet, "up_blocks.3.resnets.2.conv1.weight", "lora_unet_up_blocks_3_resnets_2_conv1"),
        (ComponentKind::Unet, "mid_block.attentions.0.proj_in.weight", "lora_unet_mid_block_attentions_0_proj_in"),
        (ComponentKind::TextEncoder, "text_model.encoder.layers.1.mlp.fc1.weight", "lora_te_text_model_encoder_layers_1_mlp_fc1"),
    ];
    for scaling in [LoraScaling::Official, LoraScaling::Kohya] {
        let set_ = LoraSet::new(vec![(Lora::open(set.path("lora.safetensors")).unwrap(), 0.8)], scaling, &[unet, text]).unwrap();
        assert_eq!(set_.num_targets(), lora.len());
        let s = if scaling == LoraScaling::Kohya { fx::lora::ALPHA / fx::lora::RANK as f32 } else { 1.0 };
        for (k, weight, module) in cases {
            let c = if k == ComponentKind::Unet { unet } else { text };
            let got = set_.merged(c, weight).unwrap();
            let want = reference_merge(
                &c.read(weight).unwrap(),
                &file.read_f32(&format!("{module}.lora_up.weight")).unwrap(),
                &file.read_f32(&format!("{module}.lora_down.weight")).unwrap(),
                fx::lora::RANK,
                0.8,
                s,
            );
            let base = c.read(weight).unwrap();
            let err = max_abs_diff(&got, &want);
            println!("{scaling} {weight}: |delta| max {:.3}, merge error {err:e}", max_abs_diff(&got, &base));
            assert!(err < 1e-6);
            assert!(max_abs_diff(&got, &base) > 1e-2, "the LoRA must change the weight");
        }
    }
    // two LoRAs add up
    let two = LoraSet::new(
        vec![(Lora::open(set.path("lora.safetensors")).unwrap(), 0.5), (Lora::open(set.path("lora.safetensors")).unwrap(), 0.3)],
        LoraScaling::Official,
        &[unet, text],
    )
    .unwrap();
    let one = LoraSet::new(vec![(Lora::open(set.path("lora.safetensors")).unwrap(), 0.8)], LoraScaling::Official, &[unet, text]).unwrap();
    let w = "down_blocks.0.attentions.1.transformer_blocks.0.ff.net.2.weight";
    assert!(max_abs_diff(&two.merged(unet, w).unwrap(), &one.merged(unet, w).unwrap()) < 1e-5);
}

#[test]
fn lora_keys_matching_nothing_are_reported() {
    let set = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.safetensors");
    let d: Vec<u8> = vec![0x3c; 4 * 2 * 2];
    let views = vec![
        ("lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2, 4], &d).unwrap()),
        ("lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4, 2], &d).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let ckpt = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap();
    let s = LoraSet::new(vec![(Lora::open(&path).unwrap(), 1.0)], LoraScaling::Kohya, &[ckpt.unet.as_ref().unwrap()]).unwrap();
    assert_eq!(s.num_targets(), 0);
    assert_eq!(s.unmatched.len(), 1);
    assert_eq!(s.unmatched[0].1.len(), 2, "{:?}", s.unmatched);
}

#[test]
fn motion_lora_in_processor_format_targets_the_motion_module() {
    let set = fixtures();
    let mm = MotionModule::open(set.path("mm_v2.safetensors"), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2_lora_PanLeft.safetensors");
    let p = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.processor.to_out_lora";
    let down: Vec<u8> = (0..2 * 128).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect();
    let up: Vec<u8> = (0..128 * 2).flat_map(|i| ((i % 5) as f32 * 0.02).to_le_bytes()).collect();
    let views = vec![
        (format!("{p}.down.weight"), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 128], &down).unwrap()),
        (format!("{p}.up.weight"), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![128, 2], &up).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let lora = Lora::open(&path).unwrap();
    let r = lora.resolve(&[&mm.weights]).unwrap();
    assert!(r.unmatched.is_empty());
    assert_eq!(r.targets[0].component, ComponentKind::MotionModule);
    assert_eq!(r.targets[0].weight, "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.weight");
}

#[test]
fn every_fixture_weight_is_non_zero() {
    // A zero weight (e.g. a zero-initialised output projection) can hide a wiring mistake.
    let set = fixtures();
    let mut checked = 0usize;
    for name in set.files.keys().filter(|n| n.ends_with(".safetensors") || n.ends_with(".ckpt")) {
        let f = TensorFile::open(set.path(name)).unwrap();
        for key in f.keys() {
            // formula tables and LDM's schedule buffers are not weights
            if key.ends_with(".pe") || ["betas", "alphas_cumprod", "alphas_cumprod_prev"].contains(&key) {
                continue;
            }
            if !f.info(key).unwrap().dtype.is_float() {
                continue;
            }
            let v = f.read_f32(key).unwrap();
            let zeros = v.iter().filter(|x| **x == 0.0).count();
            assert_eq!(zeros, 0, "{name}: `{key}` has {zeros} zero elements");
            checked += v.len();
        }
    }
    println!("{checked} weights checked, none zero");
}
