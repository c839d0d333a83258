//! The committed reference goldens (`tests/goldens/*.npz`, written by `tools/reference/`) were
//! computed from exactly the fixtures this checkout generates: every golden records the SHA-256
//! of each fixture file it read, and the fixtures are regenerated here and compared. A change to
//! the fixture tool that alters any byte fails this test until the goldens are regenerated.

use std::collections::BTreeMap;
use std::fs::File;

use ndarray::{ArrayD, Ix0, Ix1, Ix2, Ix5};
use ndarray_npy::NpzReader;

use animatediff_onnx::{fixtures, goldens_dir};

const VARIANTS: [&str; 4] = ["base", "personalized", "personalized_lora_official", "personalized_lora_kohya"];
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];

fn open(name: &str) -> NpzReader<File> {
    let path = goldens_dir().join(format!("{name}.npz"));
    NpzReader::new(File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn meta(npz: &mut NpzReader<File>) -> serde_json::Value {
    let bytes: ndarray::Array1<u8> = npz.by_name("meta").expect("meta");
    serde_json::from_slice(bytes.as_slice().unwrap()).expect("meta is JSON")
}

#[test]
fn goldens_were_computed_from_these_fixtures() {
    let set = fixtures();
    for variant in VARIANTS {
        for mm in VERSIONS {
            let name = format!("{variant}_{mm}");
            let mut npz = open(&name);
            let m = meta(&mut npz);
            assert_eq!(m["variant"], variant, "{name}");
            assert_eq!(m["motion_version"], mm, "{name}");
            let hashes: BTreeMap<String, String> = serde_json::from_value(m["fixture_sha256"].clone()).unwrap();
            assert!(hashes.contains_key(&format!("mm_{mm}.ckpt")), "{name} must name its motion module");
            if variant != "base" {
                assert!(hashes.contains_key("personalized.safetensors"), "{name}");
            }
            if variant.contains("lora") {
                assert!(hashes.contains_key("lora.safetensors"), "{name}");
            }
            for (file, sha) in &hashes {
                let now = set.files.get(file).unwrap_or_else(|| panic!("{name}: golden names unknown fixture {file}"));
                assert_eq!(now, sha, "{name}: fixture {file} changed since the golden was made; regenerate tests/goldens");
            }
            println!("{name}: {} fixture hashes match", hashes.len());
        }
    }
}

#[test]
fn goldens_hold_the_documented_arrays() {
    let first_inputs = {
        let mut npz = open("base_v1");
        let ids: ndarray::Array2<i64> = npz.by_name("te_input_ids").unwrap();
        let sample: ndarray::Array<f32, Ix5> = npz.by_name("unet_sample").unwrap();
        (ids, sample)
    };
    for variant in VARIANTS {
        for mm in VERSIONS {
            let name = format!("{variant}_{mm}");
            let mut npz = open(&name);
            let ids: ndarray::Array<i64, Ix2> = npz.by_name("te_input_ids").unwrap();
            assert_eq!(ids.shape(), [2, 77]);
            assert_eq!(ids[[0, 0]], 49406);
            assert!(ids.row(0).iter().skip(1).all(|&t| t == 49407), "empty prompt pads with EOS 49407");
            assert_eq!(ids, first_inputs.0, "inputs are shared by every golden");
            let te: ArrayD<f32> = npz.by_name("te_last_hidden_state").unwrap();
            assert_eq!(te.shape(), [2, 77, 48]);
            let sample: ndarray::Array<f32, Ix5> = npz.by_name("unet_sample").unwrap();
            assert_eq!(sample, first_inputs.1);
            let t: ndarray::Array<f32, Ix1> = npz.by_name("unet_timestep").unwrap();
            assert_eq!(t.len(), 2);
            assert_ne!(t[0], t[1], "per-item timesteps");
            let out: ArrayD<f32> = npz.by_name("unet_noise_pred").unwrap();
            assert_eq!(out.shape(), [2, 4, 16, 8, 8]);
            let ctx: ArrayD<f32> = npz.by_name("unet_encoder_hidden_states").unwrap();
            assert_eq!(ctx.shape(), [2, 77, 48]);
            let z: ArrayD<f32> = npz.by_name("vae_latent_sample").unwrap();
            assert_eq!(z.shape(), [2, 4, 8, 8]);
            let x: ArrayD<f32> = npz.by_name("vae_sample").unwrap();
            assert_eq!(x.shape(), [2, 3, 64, 64]);
            let steps: ndarray::Array<i64, Ix1> = npz.by_name("ddim_timesteps").unwrap();
            // leading spacing, steps_offset 1 (docs/spec.md §8.2): (N-1-i)·(1000/N) + 1
            assert_eq!(steps.to_vec(), vec![751, 501, 251, 1]);
            let g: ndarray::Array<f32, Ix0> = npz.by_name("ddim_guidance").unwrap();
            assert_eq!(g.into_scalar(), 7.5);
            let lat: ArrayD<f32> = npz.by_name("ddim_final_latents").unwrap();
            assert_eq!(lat.shape(), [1, 4, 16, 8, 8]);
            let frames: ArrayD<u8> = npz.by_name("ddim_frames_u8").unwrap();
            assert_eq!(frames.shape(), [16, 3, 64, 64]);
            assert!(out.iter().all(|v| v.is_finite()) && lat.iter().all(|v| v.is_finite()));
            let max = out.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.1 && max < 100.0, "{name}: UNet output max {max} should be O(1)");
        }
    }
    // The three image-model variants and both LoRA scalings really differ.
    let read = |n: &str| -> ArrayD<f32> { open(n).by_name("unet_noise_pred").unwrap() };
    let diff = |a: &ArrayD<f32>, b: &ArrayD<f32>| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let (b, p, lo, lk) = (read("base_v2"), read("personalized_v2"), read("personalized_lora_official_v2"), read("personalized_lora_kohya_v2"));
    let (v1, v3) = (read("base_v1"), read("base_v3"));
    for (what, d) in [("base vs personalized", diff(&b, &p)), ("LoRA official vs kohya", diff(&lo, &lk)), ("personalized vs +LoRA", diff(&p, &lk)), ("v1 vs v3", diff(&v1, &v3))] {
        println!("{what}: max |difference| {d:.3}");
        assert!(d > 1e-2, "{what} must differ");
    }
}
