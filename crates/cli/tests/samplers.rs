//! `animate`'s samplers and seeds on the demo model: `--noise-out` is PyTorch's `randn` for the
//! seed, bit for bit, and `--latents-in` of it reproduces the run (diffusers' meaning: the
//! sampler scales it; the seed then serves only the per-step noise, so an ancestral sampler's
//! steps differ from the seeded run's); options a sampler lacks are errors naming the flag;
//! prompt configs take the sampler keys.

use std::path::Path;
use std::process::{Command, Output};

use animatediff_runtime::noise::torch::TorchGenerator;

fn animate(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_animate")).env("ANIMATEDIFF_CACHE", cache).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read(path: &Path) -> Vec<f32> {
    let a: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path).unwrap();
    a.iter().copied().collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn seeds_are_torch_noise_and_latents_in_keeps_diffusers_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, p) = (dir.path().join("cache"), |n: &str| dir.path().join(n));
    let run = |extra: &[&str], latents_out: &Path| {
        let gif = p("x.gif");
        let mut args = vec!["--demo", "--seed", "7", "--steps", "3", "--quiet", "--out", gif.to_str().unwrap(), "--latents-out", latents_out.to_str().unwrap()];
        args.extend_from_slice(extra);
        ok(&animate(&cache, &args));
        read(latents_out)
    };
    let noise = p("noise.npy");
    let seeded = run(&["--scheduler", "euler", "--noise-out", noise.to_str().unwrap()], &p("a.npy"));
    let drawn = read(&noise);
    assert_eq!(drawn.len(), 4 * 16 * 8 * 8);
    assert_eq!(bits(&drawn), bits(&TorchGenerator::new(7).randn(drawn.len())), "--noise-out is torch.randn for seed 7");
    // Euler draws nothing per step: the same run from the written noise
    let again = run(&["--scheduler", "euler", "--latents-in", noise.to_str().unwrap()], &p("b.npy"));
    assert_eq!(bits(&seeded), bits(&again));
    // Euler a draws per step; from --latents-in the generator starts fresh at the seed, so the
    // steps' noise differs from the seeded run's (which drew the initial noise first) but is
    // the same from run to run
    let seeded_a = run(&["--scheduler", "euler-ancestral"], &p("c.npy"));
    let given_a = run(&["--scheduler", "euler-ancestral", "--latents-in", noise.to_str().unwrap()], &p("d.npy"));
    let given_a2 = run(&["--scheduler", "euler-ancestral", "--latents-in", noise.to_str().unwrap()], &p("e.npy"));
    assert_ne!(bits(&seeded_a), bits(&given_a));
    assert_eq!(bits(&given_a), bits(&given_a2));
    // the other generator gives other noise
    let splitmix = p("splitmix.npy");
    run(&["--noise", "splitmix", "--noise-out", splitmix.to_str().unwrap()], &p("f.npy"));
    assert_eq!(bits(&read(&splitmix)), bits(&animatediff_runtime::noise::gaussian(7, drawn.len())));
}

#[test]
fn options_a_sampler_lacks_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let gif = dir.path().join("x.gif");
    let out = gif.to_str().unwrap();
    for (args, flag) in [
        (vec!["--karras"], "--karras"),
        (vec!["--scheduler", "euler-ancestral", "--karras"], "--karras"),
        (vec!["--scheduler", "euler", "--eta", "0.5"], "--eta"),
        (vec!["--scheduler", "lcm", "--timestep-spacing", "trailing"], "--timestep-spacing"),
        (vec!["--scheduler", "lcm", "--steps", "60"], "--steps"),
        (vec!["--timestep-spacing", "trailing", "--steps", "61"], "--steps"),
    ] {
        let mut all = vec!["--demo", "--quiet", "--out", out];
        all.extend(args.iter());
        let o = animate(&cache, &all);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(flag), "{args:?}: {e}");
        assert!(!gif.exists());
    }
    for args in [vec!["--scheduler", "heun"], vec!["--eta", "nan"], vec!["--eta", "2"], vec!["--timestep-spacing", "karras"], vec!["--noise", "cuda"]] {
        let mut all = vec!["--demo", "--quiet", "--out", out];
        all.extend(args.iter());
        let o = animate(&cache, &all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn prompt_configs_take_the_sampler_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cfg = dir.path().join("p.yaml");
    std::fs::write(&cfg, "- prompt: [a red circle moving left]\n  seed: 3\n  steps: 3\n  scheduler: dpmpp-2m\n  karras: true\n").unwrap();
    let out = dir.path().join("out");
    let log = ok(&animate(&cache, &["--demo", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    assert!(log.contains("dpmpp-2m karras linspace, 3 steps"), "{log}");
    std::fs::write(&cfg, "- prompt: [a]\n  scheduler: heun\n").unwrap();
    let o = animate(&cache, &["--demo", "--config", cfg.to_str().unwrap(), "--out", dir.path().join("out2").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("`scheduler`") && e.contains("unknown sampler `heun`"), "{e}");
}
