//! Textual-inversion embeddings: every format read back equal to what was written, and every
//! refusal naming the file and what is wrong.

use std::path::{Path, PathBuf};

use animatediff_fixtures::embeddings::{self, EMBEDDINGS};
use animatediff_fixtures::torch_zip::{self, Py, TorchPickle, Wrapper};
use animatediff_fixtures::{Data, Tensor};
use animatediff_formats::{read_embedding, Embedding, EmbeddingFormat, Error, MAX_EMBEDDING_VECTORS};
use safetensors::Dtype;

const SEED: u64 = 11;
const WIDTH: usize = 48;

/// The fixture tool's embeddings, written once per test into its own directory.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    embeddings::write(dir.path(), SEED, WIDTH).unwrap();
    dir
}

/// A safetensors file of raw little-endian tensors.
fn safetensors_file(dir: &Path, name: &str, tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> PathBuf {
    let path = dir.join(name);
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, dtype, shape, bytes)| (*k, safetensors::tensor::TensorView::new(*dtype, shape.to_vec(), bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `n` × `d` distinct, non-zero values.
fn ramp(n: usize, d: usize) -> Vec<f32> {
    (0..n * d).map(|i| 0.25 + i as f32 * 0.125).collect()
}

fn emb_params(dir: &Path, name: &str, shape: &[usize], values: &[f32]) -> PathBuf {
    safetensors_file(dir, name, &[("emb_params", Dtype::F32, shape, f32_bytes(values))])
}

fn tensor(shape: &[usize], values: Vec<f32>) -> Tensor {
    Tensor { name: String::new(), shape: shape.to_vec(), data: Data::F32(values) }
}

fn error(path: &Path) -> String {
    let e = read_embedding(path).expect_err("the file must be refused");
    assert_eq!(e.path(), path, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "the message names the file: {msg}");
    msg
}

fn expected_values(file: &str, key: &str, shape: &[usize]) -> Vec<f32> {
    embeddings::values(SEED, file, key, shape)
}

#[test]
fn every_fixture_embedding_reads_back_as_written() {
    let dir = fixtures();
    let read = |i: usize| read_embedding(&dir.path().join(EMBEDDINGS[i].file)).unwrap();
    let [easyneg, style, learned, clipl, wide, _] = EMBEDDINGS;

    // A1111 .pt, the tensor a torch.nn.Parameter
    let e = read(0);
    assert_eq!((e.format, e.vectors, e.width, e.name.as_deref()), (EmbeddingFormat::A1111Pt, 3, WIDTH, Some("easyneg")));
    assert_eq!(e.data, expected_values(easyneg.file, easyneg.key, &[3, WIDTH]));
    assert_eq!(e.vector(2), &e.data[2 * WIDTH..]);

    // fp16 emb_params: each value as f16 holds it, widened exactly
    let e = read(1);
    assert_eq!((e.format, e.vectors, e.width, e.name.as_deref()), (EmbeddingFormat::Safetensors, 1, WIDTH, None));
    let want: Vec<f32> = expected_values(style.file, style.key, &[1, WIDTH])
        .into_iter()
        .map(|v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(e.data, want);
    assert!(want.iter().zip(expected_values(style.file, style.key, &[1, WIDTH])).any(|(h, f)| *h != f), "fp16 rounds");

    // diffusers {token: [D]}: one vector, named by its token
    let e = read(2);
    assert_eq!((e.format, e.vectors, e.width, e.name.as_deref()), (EmbeddingFormat::Diffusers, 1, WIDTH, Some("<toy>")));
    assert_eq!(e.data, expected_values(learned.file, learned.key, &[WIDTH]));

    // SDXL: clip_l, not clip_g
    let e = read(3);
    assert_eq!((e.format, e.vectors, e.width), (EmbeddingFormat::SdxlClipL, 2, WIDTH));
    assert_eq!(e.data, expected_values(clipl.file, "clip_l", &[2, WIDTH]));

    let e = read(4);
    assert_eq!((e.format, e.vectors, e.width), (EmbeddingFormat::Safetensors, 1, WIDTH + 16));
    assert_eq!(e.data, expected_values(wide.file, wide.key, &[1, WIDTH + 16]));
    assert!(e.data.iter().all(|v| *v != 0.0 && v.abs() <= 0.85));
}

#[test]
fn the_format_comes_from_the_content_not_the_extension() {
    let dir = fixtures();
    let swapped = [("embeddings/easyneg.pt", "easyneg.safetensors"), ("embeddings/style.safetensors", "style.pt")];
    for (from, to) in swapped {
        let a = read_embedding(&dir.path().join(from)).unwrap();
        std::fs::copy(dir.path().join(from), dir.path().join(to)).unwrap();
        let b = read_embedding(&dir.path().join(to)).unwrap();
        assert_eq!((a.format, a.vectors, a.width, &a.data), (b.format, b.vectors, b.width, &b.data));
    }
}

#[test]
fn a_pickled_parameter_dict_is_refused_by_name() {
    let dir = fixtures();
    let path = dir.path().join("embeddings/parameterdict.pt");
    let msg = error(&path);
    assert!(msg.starts_with(&format!("embedding {}:", path.display())), "{msg}");
    assert!(msg.contains("`torch.nn.modules.container.ParameterDict`"), "{msg}");
    assert!(msg.contains("running code") && msg.contains(".safetensors"), "{msg}");
}

#[test]
fn any_other_global_is_refused_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.pt");
    let root = Py::dict([(
        "string_to_param",
        Py::Object { module: "os".into(), class: "system".into(), state: Box::new(Py::str("echo hi")) },
    )]);
    torch_zip::write_value(&path, &root, &[]).unwrap();
    let msg = error(&path);
    assert!(msg.contains("`os.system`") && !msg.contains("ParameterDict"), "{msg}");
}

#[test]
fn a1111_with_a_plain_tensor_and_a_one_dimensional_one() {
    let dir = tempfile::tempdir().unwrap();
    for (name, shape, vectors) in [("plain.pt", vec![2, 8], 2), ("flat.pt", vec![8], 1)] {
        let path = dir.path().join(name);
        let values = ramp(1, shape.iter().product());
        let root = Py::dict([
            ("string_to_token", Py::dict([("*", Py::Int(265))])),
            ("string_to_param", Py::dict([("*", Py::Tensor(0))])),
            ("name", Py::str("plain")),
            ("step", Py::Int(7)),
            ("sd_checkpoint", Py::None),
        ]);
        torch_zip::write_value(&path, &root, &[tensor(&shape, values.clone())]).unwrap();
        let e = read_embedding(&path).unwrap();
        assert_eq!((e.format, e.vectors, e.width), (EmbeddingFormat::A1111Pt, vectors, 8));
        assert_eq!(e.data, values);
        assert_eq!(e.name.as_deref(), Some("plain"));
    }
}

#[test]
fn string_to_param_must_hold_exactly_one_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.pt");
    let root = Py::dict([("string_to_param", Py::dict([("*", Py::Tensor(0)), ("+", Py::Tensor(1))]))]);
    torch_zip::write_value(&path, &root, &[tensor(&[1, 4], ramp(1, 4)), tensor(&[1, 4], ramp(1, 4))]).unwrap();
    let msg = error(&path);
    assert!(msg.contains("holds 2 tensors") && msg.contains("string_to_param.*"), "{msg}");

    let path = dir.path().join("none.pt");
    let root = Py::dict([("string_to_param", Py::str("not a dict")), ("name", Py::str("x"))]);
    torch_zip::write_value(&path, &root, &[]).unwrap();
    let msg = error(&path);
    assert!(msg.contains("`string_to_param` is not a dict") && msg.contains("`name` (not a tensor)"), "{msg}");
}

#[test]
fn diffusers_safetensors_and_several_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let values = ramp(2, 8);
    let path = safetensors_file(dir.path(), "cat.safetensors", &[("<cat-toy>", Dtype::F32, &[2, 8], f32_bytes(&values))]);
    let e = read_embedding(&path).unwrap();
    assert_eq!((e.format, e.vectors, e.width, e.name.as_deref()), (EmbeddingFormat::Diffusers, 2, 8, Some("<cat-toy>")));
    assert_eq!(e.data, values);
}

#[test]
fn other_dtypes_convert_as_torch_float_does() {
    let dir = tempfile::tempdir().unwrap();
    // bf16: the upper half of an f32, so widening is exact
    let bf: Vec<u16> = vec![0x3f80, 0xbf40, 0x4049, 0x0001];
    let bytes: Vec<u8> = bf.iter().flat_map(|b| b.to_le_bytes()).collect();
    let path = safetensors_file(dir.path(), "bf16.safetensors", &[("emb_params", Dtype::BF16, &[1, 4], bytes)]);
    let e = read_embedding(&path).unwrap();
    assert_eq!(e.data, bf.iter().map(|b| f32::from_bits((*b as u32) << 16)).collect::<Vec<_>>());
    assert_eq!(e.data[..2], [1.0, -0.75]);

    // f64: rounded to the nearest f32, ties to even
    let f64s = [1.0 + 2f64.powi(-30), 1.0 + 3.0 * 2f64.powi(-24), 0.1, -1e-40];
    let bytes: Vec<u8> = f64s.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = safetensors_file(dir.path(), "f64.safetensors", &[("emb_params", Dtype::F64, &[4], bytes)]);
    let e = read_embedding(&path).unwrap();
    assert_eq!((e.vectors, e.width), (1, 4));
    assert_eq!(e.data, vec![1.0, 1.0 + 4.0 * 2f32.powi(-24), 0.1f32, -1e-40f32]);

    // f16 subnormals and the largest f16 widen exactly
    let f16s = [half::f16::from_bits(0x0001), half::f16::MAX, half::f16::from_f32(-0.333)];
    let bytes: Vec<u8> = f16s.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = safetensors_file(dir.path(), "f16.safetensors", &[("emb_params", Dtype::F16, &[1, 3], bytes)]);
    assert_eq!(read_embedding(&path).unwrap().data, f16s.iter().map(|v| v.to_f32()).collect::<Vec<_>>());
    assert_eq!(read_embedding(&path).unwrap().data[0], 2f32.powi(-24));

    let path = safetensors_file(dir.path(), "int.safetensors", &[("emb_params", Dtype::I64, &[1, 2], vec![0; 16])]);
    let e = read_embedding(&path).unwrap_err();
    assert!(matches!(e, Error::UnsupportedDtype { .. }), "{e}");
}

#[test]
fn unknown_keys_are_listed_with_the_formats_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = safetensors_file(
        dir.path(),
        "lora.safetensors",
        &[("a.weight", Dtype::F32, &[2, 3], f32_bytes(&ramp(2, 3))), ("b", Dtype::F32, &[4], f32_bytes(&ramp(1, 4)))],
    );
    let msg = error(&path);
    assert!(msg.contains("not a textual-inversion embedding"), "{msg}");
    assert!(msg.contains("`a.weight` [2, 3]") && msg.contains("`b` [4]"), "{msg}");
    assert!(msg.contains("string_to_param") && msg.contains("emb_params") && msg.contains("clip_l"), "{msg}");

    // one tensor beside other entries is not a diffusers file either
    let path = dir.path().join("extra.bin");
    torch_zip::write_value(&path, &Py::dict([("<toy>", Py::Tensor(0)), ("step", Py::Int(3))]), &[tensor(&[4], ramp(1, 4))])
        .unwrap();
    let msg = error(&path);
    assert!(msg.contains("`<toy>` [4]") && msg.contains("`step` (not a tensor)"), "{msg}");

    // many keys: a dozen named, the rest counted
    let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("t{i:02}"), f32_bytes(&[1.0]))).collect();
    let list: Vec<(&str, Dtype, &[usize], Vec<u8>)> =
        many.iter().map(|(k, b)| (k.as_str(), Dtype::F32, &[1usize][..], b.clone())).collect();
    let msg = error(&safetensors_file(dir.path(), "many.safetensors", &list));
    assert!(msg.contains("20 entries") && msg.contains("and 8 more") && !msg.contains("t19"), "{msg}");
}

#[test]
fn vector_counts_and_widths_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let msg = error(&emb_params(dir.path(), "zero.safetensors", &[0, 8], &[]));
    assert!(msg.contains("no vectors"), "{msg}");

    let n = MAX_EMBEDDING_VECTORS;
    let e = read_embedding(&emb_params(dir.path(), "max.safetensors", &[n, 4], &ramp(n, 4))).unwrap();
    assert_eq!((e.vectors, e.width), (75, 4));
    let msg = error(&emb_params(dir.path(), "76.safetensors", &[n + 1, 4], &ramp(n + 1, 4)));
    assert!(msg.contains("76 vectors, more than the 75"), "{msg}");

    let msg = error(&emb_params(dir.path(), "wide.safetensors", &[1, 5000], &ramp(1, 5000)));
    assert!(msg.contains("width 5000"), "{msg}");
    let msg = error(&emb_params(dir.path(), "empty.safetensors", &[2, 0], &[]));
    assert!(msg.contains("width 0"), "{msg}");
    let msg = error(&emb_params(dir.path(), "rank3.safetensors", &[1, 2, 4], &ramp(2, 4)));
    assert!(msg.contains("shape [1, 2, 4]"), "{msg}");
    let msg = error(&emb_params(dir.path(), "scalar.safetensors", &[], &[1.0]));
    assert!(msg.contains("shape []"), "{msg}");
}

#[test]
fn a_huge_shape_is_refused_before_any_data_is_read() {
    // One stored float viewed (stride 0) as 60 × 4,000,000: reading it would take 960 MB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.pt");
    let mut p = TorchPickle::new(Wrapper::None);
    p.tensor("emb_params", "FloatStorage", "0", 1, &[60, 4_000_000], &[0, 0]);
    torch_zip::write_archive(&path, &p.finish(), &[tensor(&[1], vec![0.5])]).unwrap();
    let msg = error(&path);
    assert!(msg.contains("width 4000000"), "{msg}");
}

#[test]
fn a_compressed_storage_inflates_only_so_far() {
    // A re-zipped (deflated) storage claiming 20M floats: refused before inflating, where a model
    // file may inflate up to 4 GiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deflated.pt");
    let mut p = TorchPickle::new(Wrapper::None);
    p.tensor("emb_params", "FloatStorage", "0", 20_000_000, &[1, 4], &[4, 1]);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("archive/data.pkl", deflated).unwrap();
    std::io::Write::write_all(&mut zip, &p.finish()).unwrap();
    zip.start_file("archive/data/0", deflated).unwrap();
    std::io::Write::write_all(&mut zip, &[0u8; 16]).unwrap();
    zip.finish().unwrap();
    let msg = error(&path);
    assert!(msg.contains("would inflate to 80000000 bytes, more than the 67108864 accepted"), "{msg}");
}

#[test]
fn non_finite_values_are_refused_with_their_index() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut values = ramp(2, 4);
        values[5] = bad;
        let msg = error(&emb_params(dir.path(), "nan.safetensors", &[2, 4], &values));
        assert!(msg.contains(&format!("holds {shown} at index 5 (vector 1, element 1)")), "{msg}");
    }
    // an f64 beyond f32's range becomes inf, as in torch, and is refused
    let bytes: Vec<u8> = [1.0f64, 1e300].iter().flat_map(|v| v.to_le_bytes()).collect();
    let msg = error(&safetensors_file(dir.path(), "big.safetensors", &[("emb_params", Dtype::F64, &[2], bytes)]));
    assert!(msg.contains("inf at index 1"), "{msg}");
}

#[test]
fn truncated_and_foreign_files_are_errors() {
    let dir = fixtures();
    for name in ["embeddings/style.safetensors", "embeddings/easyneg.pt", "embeddings/learned_embeds.bin"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        for keep in [bytes.len() - 1, bytes.len() / 2, 9, 3, 0] {
            let path = dir.path().join(format!("cut{keep}"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            error(&path);
        }
    }
    let path = dir.path().join("legacy.pt");
    std::fs::write(&path, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert!(error(&path).contains("legacy"));
    let msg = read_embedding(&dir.path().join("missing.pt")).unwrap_err().to_string();
    assert!(msg.contains("missing.pt"), "{msg}");
}

#[test]
fn width_mismatches_name_the_likely_model_family() {
    let embedding = |width: usize, format| Embedding { format, vectors: 1, width, data: vec![0.5; width], name: None };
    let a1111 = EmbeddingFormat::A1111Pt;
    let path = Path::new("sd2.pt");
    let msg = |e: Embedding, expected| e.check_width(path, expected).unwrap_err().to_string();
    assert_eq!(
        msg(embedding(1024, a1111), 768),
        "embedding sd2.pt: vectors of width 1024 (an SD 2.x embedding), but this model's text encoder is 768 wide"
    );
    assert!(msg(embedding(1280, a1111), 768).contains("width 1280 (an SDXL (clip_g) embedding), but"));
    let sd1 = msg(embedding(768, a1111), 1024);
    assert!(sd1.contains("width 768 (an SD1.x embedding), but this model's text encoder is 1024 wide"), "{sd1}");
    assert!(msg(embedding(768, EmbeddingFormat::SdxlClipL), 1024).contains("(the clip_l half of an SDXL embedding)"));
    assert!(msg(embedding(64, a1111), 48).ends_with("vectors of width 64, but this model's text encoder is 48 wide"));
    embedding(768, a1111).check_width(path, 768).unwrap();

    let dir = fixtures();
    let path = dir.path().join("embeddings/wide.safetensors");
    let e = read_embedding(&path).unwrap();
    let err = e.check_width(&path, WIDTH).unwrap_err();
    assert_eq!(err.path(), path);
    assert!(err.to_string().contains("width 64, but this model's text encoder is 48 wide"), "{err}");
}

#[test]
fn formats_display_as_documented() {
    let shown: Vec<String> =
        [EmbeddingFormat::A1111Pt, EmbeddingFormat::Safetensors, EmbeddingFormat::SdxlClipL, EmbeddingFormat::Diffusers]
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        shown,
        ["A1111 .pt (string_to_param)", "safetensors (emb_params)", "safetensors (clip_l)", "diffusers learned_embeds"]
    );
}
