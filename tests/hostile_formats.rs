//! Hostile model files: pickle bombs, lying sizes, zip bombs and truncated containers give an
//! error that names the file, quickly and in bounded memory, never a panic or an abort.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use animatediff_fixtures::torch_zip::{TorchPickle, Wrapper};
use animatediff_formats::TensorFile;

/// `torch.save`'s pickle of one float32 tensor view `name` of storage `key`, with whatever sizes
/// it is told.
fn lying_tensor(name: &str, numel: usize, shape: &[usize], stride: &[usize]) -> Vec<u8> {
    let mut p = TorchPickle::new(Wrapper::None);
    p.tensor(name, "FloatStorage", "0", numel, shape, stride);
    p.finish()
}

/// One zip entry: its name, whether it is deflated, and what is written through the writer.
struct Entry<'a> {
    name: &'a str,
    deflate: bool,
    data: &'a dyn Fn(&mut dyn Write),
}

/// A torch-style zip of `entries`.
fn write_zip(path: &Path, entries: &[Entry<'_>]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for e in entries {
        let o = zip::write::SimpleFileOptions::default();
        let o = if e.deflate {
            o.compression_method(zip::CompressionMethod::Deflated).compression_level(Some(1))
        } else {
            o.compression_method(zip::CompressionMethod::Stored)
        };
        z.start_file(e.name, o).unwrap();
        (e.data)(&mut z);
    }
    z.finish().unwrap();
}

fn bytes(b: &[u8]) -> impl Fn(&mut dyn Write) + '_ {
    move |w| w.write_all(b).unwrap()
}

/// Writes `n` zero bytes, a megabyte at a time.
fn zeros(n: usize) -> impl Fn(&mut dyn Write) {
    move |w| {
        let mb = vec![0u8; 1 << 20];
        for _ in 0..n / mb.len() {
            w.write_all(&mb).unwrap();
        }
    }
}

/// Rewrites the uncompressed size the archive declares for `name` (local and central headers):
/// a zip that lies about how far its entry inflates.
fn declare_size(path: &Path, name: &str, size: u32) {
    let mut zip = std::fs::read(path).unwrap();
    let mut patched = 0;
    for at in 0..zip.len().saturating_sub(46) {
        let (sig, size_at, name_len_at, name_at) = match &zip[at..at + 4] {
            b"PK\x03\x04" => ("local", at + 22, at + 26, at + 30),
            b"PK\x01\x02" => ("central", at + 24, at + 28, at + 46),
            _ => continue,
        };
        let len = u16::from_le_bytes([zip[name_len_at], zip[name_len_at + 1]]) as usize;
        if zip.get(name_at..name_at + len) == Some(name.as_bytes()) {
            zip[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
            let _ = sig;
        }
    }
    assert_eq!(patched, 2, "{name} in {}", path.display());
    std::fs::write(path, zip).unwrap();
}

/// Opens `path`, which must fail within a few seconds; the message, which must name the file.
fn refused(path: &Path) -> String {
    let start = Instant::now();
    let e = TensorFile::open(path).unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}: {e}", start.elapsed());
    assert!(e.contains(&path.file_name().unwrap().to_string_lossy().into_owned()), "{e}");
    println!("{e}");
    e
}

fn pickle_zip(path: &Path, pickle: &[u8], deflate: bool) {
    write_zip(path, &[Entry { name: "archive/data.pkl", deflate, data: &bytes(pickle) }]);
}

/// A checkpoint of `pickle` (stored) and one storage `data/0` (deflated if asked).
fn one_storage_zip(path: &Path, pickle: &[u8], deflate: bool, data: &dyn Fn(&mut dyn Write)) {
    let pkl = bytes(pickle);
    write_zip(path, &[Entry { name: "archive/data.pkl", deflate: false, data: &pkl }, Entry { name: "archive/data/0", deflate, data }]);
}

#[test]
fn pickle_bombs_in_a_checkpoint_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The 330-byte DUP bomb: `]` then DUP + APPEND 40 times, 2^40 values.
    let mut dup = b"\x80\x02]".to_vec();
    dup.extend(b"2a".repeat(40));
    dup.push(b'.');
    // The memo bomb: 47 levels, each a list of two memo GETs of the level before.
    let mut memo = b"\x80\x02]q\x00".to_vec();
    for i in 0..47u8 {
        memo.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
    }
    memo.push(b'.');
    // Many pushes: 3M `N`, deflated to a few KB.
    let mut pushes = vec![b'N'; 3_000_000];
    pushes.push(b'.');
    // Deep nesting: 2M lists appended into each other.
    let mut deep = b"]".repeat(2_000_000);
    deep.extend(b"a".repeat(1_999_999));
    deep.push(b'.');
    for (name, pickle) in [("dup.ckpt", dup), ("memo.ckpt", memo), ("pushes.ckpt", pushes), ("deep.ckpt", deep)] {
        let path = dir.path().join(name);
        pickle_zip(&path, &pickle, true);
        let e = refused(&path);
        assert!(e.contains("pickle refused") && e.contains("corrupt or hostile"), "{e}");
    }
}

#[test]
fn storage_size_overflow_is_an_error() {
    // A LoRA whose `alpha` claims 2^62 elements (x 4 bytes wraps to 0) with shape (2^22,) and 4
    // bytes of data.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alpha.ckpt");
    one_storage_zip(&path, &lying_tensor("alpha", 1 << 62, &[1 << 22], &[1]), false, &bytes(&[0; 4]));
    let e = refused(&path);
    assert!(e.contains("tensor `alpha`") && e.contains("overflows"), "{e}");
}

#[test]
fn views_past_their_storage_or_overflowing_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, usize, &[usize], &[usize], &str); 4] = [
        // offset + sum((size-1) * stride) overflows
        ("stride.ckpt", 4, &[5, 1], &[1 << 62, 1], "reaches past its storage"),
        // the shape's product overflows
        ("shape.ckpt", 4, &[1 << 32, 1 << 32, 1 << 2], &[0, 0, 0], "overflows"),
        // a stride-0 view of one element repeated 2^40 times
        ("repeat.ckpt", 4, &[1 << 40], &[0], "repeated"),
        // plainly past the end
        ("past.ckpt", 4, &[5], &[1], "reaches past its storage"),
    ];
    for (name, numel, shape, stride, want) in cases {
        let path = dir.path().join(name);
        one_storage_zip(&path, &lying_tensor("w", numel, shape, stride), false, &bytes(&vec![0u8; numel * 4]));
        let e = refused(&path);
        assert!(e.contains("tensor `w`") && e.contains(want), "{name}: {e}");
    }
}

#[test]
fn a_pickle_that_is_a_zip_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // data.pkl inflates to 1 GiB and says so: refused by its declared size, before inflating.
    let path = dir.path().join("pkl_bomb.ckpt");
    write_zip(&path, &[Entry { name: "archive/data.pkl", deflate: true, data: &zeros(1 << 30) }]);
    let e = refused(&path);
    assert!(e.contains("data.pkl") && e.contains("1073741824 bytes") && e.contains("accepted"), "{e}");
    // The same, declaring 1000 bytes: inflating stops at the 1001st.
    declare_size(&path, "archive/data.pkl", 1000);
    let e = refused(&path);
    assert!(e.contains("data.pkl") && e.contains("declared"), "{e}");
}

#[test]
fn a_storage_that_is_a_zip_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storage_bomb.ckpt");
    let p = lying_tensor("w", 4, &[4], &[1]);
    let entries = |data: &dyn Fn(&mut dyn Write)| one_storage_zip(&path, &p, true, data);
    // data/0 inflates to 1 GiB where the pickle needs 16 bytes: refused by its declared size.
    entries(&zeros(1 << 30));
    let e = refused(&path);
    assert!(e.contains("archive/data/0") && e.contains("more than the 16 accepted"), "{e}");
    // Declaring 16 bytes: inflating stops at the 17th.
    declare_size(&path, "archive/data/0", 16);
    let e = refused(&path);
    assert!(e.contains("archive/data/0") && e.contains("declared"), "{e}");
    // A compressed storage of the right size still reads.
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    entries(&bytes(&data));
    assert_eq!(TensorFile::open(&path).unwrap().read_f32("w").unwrap(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn truncated_safetensors_and_empty_zips_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut full = (header.len() as u64).to_le_bytes().to_vec();
    full.extend(header);
    full.extend([0u8; 16]);
    let cases: [(&str, Vec<u8>, String); 4] = [
        ("data.safetensors", full[..full.len() - 6].to_vec(), "file is truncated: its header places tensor data up to 16 bytes after the header, the file has 10".into()),
        ("header.safetensors", full[..20].to_vec(), format!("file is truncated: its header claims {} bytes, the file has 12", header.len())),
        ("tiny.safetensors", full[..5].to_vec(), "file is 5 bytes long, too short".into()),
        ("empty.ckpt", b"PK\x05\x06".iter().copied().chain([0; 18]).collect(), "empty zip archive (no entries): not a PyTorch checkpoint".into()),
    ];
    for (name, bytes, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = refused(&path);
        assert!(e.contains(&want), "{name}: {e}");
    }
    let path = dir.path().join("whole.safetensors");
    std::fs::write(&path, &full).unwrap();
    assert_eq!(TensorFile::open(&path).unwrap().read_f32("w").unwrap(), [0.0; 4]);
}

// ---- Non-finite weights and shapes that do not fit: what build-graph reads must be sound. ----

use animatediff_build::{build, model, BuildOptions};
use animatediff_fixtures::{self as fx, TinyArch, Version};
use animatediff_formats::{Error, LoadOptions, Lora, LoraScaling, LoraSet, MotionModule, SdCheckpoint};

/// The fixture set's base model, its kohya LoRA and a v2 motion module (tensors), generated once
/// per test process.
fn pristine(name: &str) -> &'static [fx::Tensor] {
    static SETS: std::sync::OnceLock<[Vec<fx::Tensor>; 3]> = std::sync::OnceLock::new();
    let [base, lora, mm] = SETS.get_or_init(|| {
        let (seed, arch) = (fx::DEFAULT_SEED, TinyArch::default());
        [
            fx::sd_checkpoint_tensors(seed, "base", &arch, &Default::default()),
            fx::lora::kohya_lora(seed, &fx::sd15::image_model(seed, "base", &arch)),
            fx::motion::motion_module(seed, Version::V2, &arch),
        ]
    });
    match name {
        "base.safetensors" => base,
        "lora.safetensors" => lora,
        "mm.safetensors" => mm,
        other => panic!("no fixture {other}"),
    }
}

/// `base.safetensors`, `lora.safetensors` and `mm.safetensors` in a directory of their own, any
/// of them rewritten with an edit.
struct Edited {
    dir: tempfile::TempDir,
}

impl Edited {
    fn new() -> Self {
        let set = Edited { dir: tempfile::tempdir().unwrap() };
        for name in ["base.safetensors", "lora.safetensors", "mm.safetensors"] {
            set.edit(name, |_| {});
        }
        set
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    /// Writes `name` as the fixture's tensors with `edit` applied.
    fn edit(&self, name: &str, edit: impl FnOnce(&mut Vec<fx::Tensor>)) {
        let mut tensors: Vec<fx::Tensor> = pristine(name).iter().map(f32_tensor).collect();
        edit(&mut tensors);
        fx::tensors::write_safetensors(&self.path(name), &tensors).unwrap();
    }
}

/// `t` with its f16 values widened to f32 (so that edits can write any f32).
fn f32_tensor(t: &fx::Tensor) -> fx::Tensor {
    let data = match &t.data {
        fx::Data::F16(v) => fx::Data::F32(v.iter().map(|x| x.to_f32()).collect()),
        other => other.clone(),
    };
    fx::Tensor { name: t.name.clone(), shape: t.shape.clone(), data }
}

/// Sets the first value of the tensor whose name ends with `suffix` (the first such) to `v`.
fn poison(tensors: &mut [fx::Tensor], suffix: &str, v: f32) -> String {
    let t = tensors.iter_mut().find(|t| t.name.ends_with(suffix)).unwrap_or_else(|| panic!("no `*{suffix}`"));
    if let fx::Data::F32(values) = &mut t.data {
        values[0] = v;
    }
    t.name.clone()
}

fn unet(set: &Edited) -> SdCheckpoint {
    SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).unwrap()
}

/// Merges the set's LoRA (×`multiplier`, `scaling`) into every UNet and text-encoder weight it
/// changes; the first error.
fn merge_all(set: &Edited, scaling: LoraScaling, multiplier: f32, allow: bool) -> Result<(), Error> {
    let ck = unet(set);
    let components = [ck.unet.as_ref().unwrap(), ck.text_encoder.as_ref().unwrap()];
    let mut loras = LoraSet::new(vec![(Lora::open(set.path("lora.safetensors"))?, multiplier)], scaling, &components)?;
    loras.allow_nonfinite = allow;
    for c in components {
        for name in c.names().filter(|n| loras.touches(c.kind, n)) {
            loras.merged(c, name)?;
        }
    }
    Ok(())
}

#[test]
fn nonfinite_lora_alpha_or_weights_are_errors_naming_the_lora() {
    for (bad, suffix, scaling, want) in [
        (f32::NAN, ".alpha", LoraScaling::Kohya, ".alpha`"),
        (f32::INFINITY, ".alpha", LoraScaling::Kohya, ".alpha`"),
        (f32::NAN, ".lora_up.weight", LoraScaling::Official, ".lora_up.weight` @ `"),
        (f32::NEG_INFINITY, ".lora_down.weight", LoraScaling::Official, ".lora_down.weight`"),
    ] {
        let set = Edited::new();
        let mut key = String::new();
        set.edit("lora.safetensors", |t| key = poison(t, suffix, bad));
        let e = merge_all(&set, scaling, 1.0, false).unwrap_err();
        let msg = e.to_string();
        println!("{msg}");
        assert!(matches!(e, Error::NonFinite { .. }), "{msg}");
        assert!(msg.contains("lora.safetensors") && msg.contains(&key) && msg.contains(want) && msg.contains("--allow-nonfinite"), "{msg}");
        merge_all(&set, scaling, 1.0, true).unwrap();
    }
    // Alpha is not used by the official scaling, so a NaN there harms nothing.
    let set = Edited::new();
    set.edit("lora.safetensors", |t| drop(poison(t, ".alpha", f32::NAN)));
    merge_all(&set, LoraScaling::Official, 1.0, false).unwrap();
}

#[test]
fn a_merge_that_overflows_is_an_error() {
    // Finite LoRA weights (1e4) and a finite multiplier whose product overflows f32.
    let set = Edited::new();
    set.edit("lora.safetensors", |tensors| {
        for t in tensors.iter_mut().filter(|t| t.name.ends_with(".lora_up.weight")) {
            t.data = fx::Data::F32(vec![1e4; t.shape.iter().product()]);
        }
    });
    let e = merge_all(&set, LoraScaling::Kohya, 3.0e38, false).unwrap_err().to_string();
    assert!(e.contains("lora.safetensors") && e.contains("merged into the model's weight") && e.contains("inf"), "{e}");
    merge_all(&set, LoraScaling::Kohya, 1.0, false).unwrap();
    merge_all(&set, LoraScaling::Kohya, 3.0e38, true).unwrap();
}

#[test]
fn nonfinite_base_and_motion_weights_are_errors_naming_the_file() {
    let set = Edited::new();
    let mut key = String::new();
    set.edit("base.safetensors", |t| key = poison(t, "input_blocks.0.0.weight", f32::NAN));
    let ck = unet(&set);
    let e = ck.unet.as_ref().unwrap().read("conv_in.weight").unwrap_err().to_string();
    assert!(e.contains("base.safetensors") && e.contains(&key) && e.contains("1 NaN or infinite"), "{e}");

    let mut key = String::new();
    set.edit("mm.safetensors", |t| key = poison(t, "proj_in.weight", f32::INFINITY));
    let mut mm = MotionModule::open(set.path("mm.safetensors"), None).unwrap();
    let e = mm.weights.read(&key).unwrap_err().to_string();
    assert!(e.contains("mm.safetensors") && e.contains(&key) && e.contains("(the first, inf, at index 0)"), "{e}");
    mm.weights.set_allow_nonfinite(true);
    assert!(mm.weights.read(&key).unwrap()[0].is_infinite());
}

#[test]
fn build_refuses_a_nonfinite_motion_module_unless_allowed() {
    let set = Edited::new();
    let mut key = String::new();
    set.edit("mm.safetensors", |t| key = poison(t, "to_out.0.bias", f32::NAN));
    let opts = |out: &str, allow| BuildOptions {
        base: Some(set.path("base.safetensors")),
        quiet: true,
        golden: false,
        allow_nonfinite: allow,
        ..BuildOptions::new(set.path("mm.safetensors"), set.path(out))
    };
    let e = build(&opts("refused", false)).unwrap_err().to_string();
    assert!(e.contains("mm.safetensors") && e.contains(&key), "{e}");
    assert!(!set.path("refused").exists());
    build(&opts("allowed", true)).unwrap();
}

#[test]
fn lora_modules_of_the_wrong_rank_or_width_are_named_not_matched() {
    let set = Edited::new();
    let (mut wide, mut ranked) = (String::new(), String::new());
    set.edit("lora.safetensors", |tensors| {
        let mut downs = tensors.iter_mut().filter(|t| t.name.ends_with(".lora_down.weight") && t.shape.len() == 2);
        // One module's down is one input wider than its weight.
        let t = downs.next().unwrap();
        t.shape[1] += 1;
        t.data = fx::Data::F32(vec![0.01; t.shape.iter().product()]);
        wide = t.name.clone();
        // Another's down has rank 5 where its up has rank 4.
        let t = downs.next().unwrap();
        t.shape[0] += 1;
        t.data = fx::Data::F32(vec![0.01; t.shape.iter().product()]);
        ranked = t.name.replace("lora_down", "lora_up");
    });
    let ck = unet(&set);
    let spec = set.path("lora.safetensors").to_str().unwrap().parse().unwrap();
    let components = [ck.unet.as_ref().unwrap(), ck.text_encoder.as_ref().unwrap()];
    let e = model::resolve_lora(&spec, &components).map(|_| ()).unwrap_err().to_string();
    println!("{e}");
    assert!(e.contains("2 LoRA modules do not fit") && e.contains(&wide) && e.contains(&ranked), "{e}");
}

#[test]
fn a_motion_module_missing_a_weight_is_named() {
    let set = Edited::new();
    let missing = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_v.weight";
    set.edit("mm.safetensors", |t| t.retain(|t| t.name != missing));
    let mm = MotionModule::open(set.path("mm.safetensors"), None).unwrap();
    let e = model::check_motion_weights(&mm).unwrap_err().to_string();
    assert!(e.contains("mm.safetensors") && e.contains(&format!("missing weight `{missing}`")), "{e}");
    let ck = unet(&set);
    let (arch, _) = model::architecture(&ck, None).unwrap();
    let e = model::check_motion_module(&mm, &arch, None).unwrap_err().to_string();
    assert!(e.contains(missing), "{e}");
    // The whole module passes.
    let whole = Edited::new();
    let mm = MotionModule::open(whole.path("mm.safetensors"), None).unwrap();
    model::check_motion_module(&mm, &arch, None).unwrap();
}
