use super::*;
use crate::noise::torch::TorchGenerator;

fn opts(method: ContextMethod, fuse: ContextFuse, closed_loop: bool) -> ContextOptions {
    ContextOptions { method, fuse, closed_loop, ..Default::default() }
}

fn starts(f: &Fusion) -> Vec<usize> {
    f.windows.iter().map(|w| w[0]).collect()
}

/// Each frame's shares, summed.
fn coverage(f: &Fusion) -> Vec<f64> {
    let mut total = vec![0f64; f.frames];
    for (w, s) in f.windows.iter().zip(&f.shares) {
        for (&frame, &share) in w.iter().zip(s) {
            total[frame] += share as f64;
        }
    }
    total
}

#[test]
fn weights_are_flat_or_a_pyramid_as_diffusers_and_evolved_define_them() {
    assert_eq!(ContextFuse::Flat.weights(3), [1.0; 3]);
    assert_eq!(ContextFuse::Pyramid.weights(4), [1.0, 2.0, 2.0, 1.0]);
    assert_eq!(ContextFuse::Pyramid.weights(5), [1.0, 2.0, 3.0, 2.0, 1.0]);
    let w16 = ContextFuse::Pyramid.weights(16);
    assert_eq!(w16[..8], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    assert_eq!(w16[8..], [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]);
}

#[test]
fn uniform_windows_start_every_stride_and_the_last_is_moved_back_to_end_on_the_last_frame() {
    let u = opts(ContextMethod::Uniform, ContextFuse::Pyramid, false);
    assert_eq!(u.stride(), 12);
    assert_eq!(starts(&u.fusion(40)), [0, 12, 24]);
    assert_eq!(starts(&u.fusion(48)), [0, 12, 24, 32]);
    assert_eq!(starts(&u.fusion(17)), [0, 1]);
    assert_eq!(starts(&u.fusion(28)), [0, 12]);
    for n in [17, 29, 40, 48, 100, 128] {
        let f = u.fusion(n);
        assert!(f.windows.iter().all(|w| w.len() == 16 && w.windows(2).all(|p| p[1] == p[0] + 1) && *w.last().unwrap() < n));
        for (frame, t) in coverage(&f).into_iter().enumerate() {
            assert!((t - 1.0).abs() < 1e-6, "{n} frames: frame {frame} has shares summing to {t}");
        }
    }
}

#[test]
fn a_video_no_longer_than_a_window_is_one_window_of_every_frame_with_identity_inputs() {
    for method in [ContextMethod::Uniform, ContextMethod::FreeNoise] {
        for closed in [false, true] {
            let f = opts(method, ContextFuse::Pyramid, closed).fusion(10);
            assert_eq!(f.windows, [(0..10).collect::<Vec<_>>()]);
            let (frames, fuse) = f.motion_inputs();
            assert_eq!(frames, (0..10).collect::<Vec<i64>>());
            for r in 0..10 {
                for c in 0..10 {
                    assert_eq!(fuse[r * 10 + c], if r == c { 1.0 } else { 0.0 });
                }
            }
        }
    }
}

#[test]
fn freenoise_windows_follow_diffusers_including_its_last_window_rule() {
    let f = opts(ContextMethod::FreeNoise, ContextFuse::Flat, false).fusion(40);
    assert_eq!(starts(&f), [0, 12, 24]);
    assert!(coverage(&f).iter().all(|t| (t - 1.0).abs() < 1e-6));
    // 48 frames: windows at 0, 12, 24 fit; (32, 48) is added and counts for frames 40..48 only
    let f = opts(ContextMethod::FreeNoise, ContextFuse::Pyramid, false).fusion(48);
    assert_eq!(starts(&f), [0, 12, 24, 32]);
    assert!(f.shares[3][..8].iter().all(|&s| s == 0.0), "{:?}", f.shares[3]);
    // frames 32..40 are the third window's alone: share 1 whatever the weight
    // (window 24's slots 8..16 hold them, and window 12 ends at 28)
    assert!(f.shares[2][8..].iter().all(|&s| s == 1.0), "{:?}", f.shares[2]);
    // the last 8 frames: each slot's weight (8, 7, …, 1) over weights[16 − 8] = 8, as diffusers
    let tail: Vec<f32> = f.shares[3][8..].to_vec();
    assert_eq!(tail, [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0].map(|w| w / 8.0));
    // with flat weights the rule is harmless: every frame sums to 1
    let f = opts(ContextMethod::FreeNoise, ContextFuse::Flat, false).fusion(48);
    assert!(coverage(&f).iter().all(|t| (t - 1.0).abs() < 1e-6));
}

#[test]
fn closed_loop_windows_wrap_so_the_last_reaches_into_the_first() {
    for method in [ContextMethod::Uniform, ContextMethod::FreeNoise] {
        let f = opts(method, ContextFuse::Pyramid, true).fusion(40);
        assert_eq!(starts(&f), [0, 12, 24, 36]);
        assert_eq!(f.windows[3], [36, 37, 38, 39, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert!(coverage(&f).iter().all(|t| (t - 1.0).abs() < 1e-6));
        // every window holds distinct frames, also when the video is barely longer than one
        let f = opts(method, ContextFuse::Flat, true).fusion(17);
        assert_eq!(starts(&f), [0, 12]);
        let mut w = f.windows[1].clone();
        w.sort();
        w.dedup();
        assert_eq!(w.len(), 16);
    }
}

#[test]
fn motion_inputs_place_each_share_at_its_frame_and_slot() {
    let f = opts(ContextMethod::FreeNoise, ContextFuse::Pyramid, false).fusion(40);
    let (frames, fuse) = f.motion_inputs();
    assert_eq!(frames.len(), 48);
    assert_eq!(&frames[16..20], &[12, 13, 14, 15]);
    // frame 13: slot 13 of window 0 (weight 3) and slot 1 of window 1 (weight 2)
    let row = &fuse[13 * 48..14 * 48];
    assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), 2);
    assert!((row[13] - 0.6).abs() < 1e-7 && (row[17] - 0.4).abs() < 1e-7, "{} {}", row[13], row[17]);
}

#[test]
fn options_are_checked_against_the_position_table() {
    let mut o = ContextOptions::default();
    o.check(32).unwrap();
    o.length = 33;
    assert!(matches!(o.check(32), Err(Error::Invalid { setting: Setting::ContextLength, .. })));
    o.length = 16;
    o.overlap = 16;
    let e = o.check(32).unwrap_err();
    assert!(matches!(e, Error::Invalid { setting: Setting::ContextOverlap, .. }), "{e}");
    assert!("pyramid".parse::<ContextFuse>().is_ok() && "mean".parse::<ContextFuse>().is_err());
    assert_eq!("freenoise".parse::<ContextMethod>(), Ok(ContextMethod::FreeNoise));
}

#[test]
fn torch_randperm_continues_the_generator_as_pytorch() {
    // torch.manual_seed(7); torch.randn(1, 4, 40, 8, 8); torch.randperm(12)
    let mut g = TorchGenerator::new(7);
    g.randn(4 * 40 * 64);
    assert_eq!(g.randperm(12), [8, 4, 9, 0, 2, 3, 5, 6, 1, 10, 7, 11]);
    assert_eq!(g.randperm(1), [0]);
    assert!(g.randperm(0).is_empty());
}

#[test]
fn shuffle_context_copies_permuted_earlier_frames_forward() {
    // frame j holds the value j in every channel and pixel
    let (c, frames, hw) = (2, 40, 3);
    let mut x: Vec<f32> = (0..c * frames * hw).map(|i| ((i / hw) % frames) as f32).collect();
    let o = ContextOptions::default();
    let mut g = TorchGenerator::new(3);
    shuffle_context(&mut x, c, frames, hw, &o, &mut g);
    let frame = |x: &[f32], ch: usize, f: usize| x[(ch * frames + f) * hw];
    // frames 0..16 untouched; 16..28 a permutation of 0..12; 28..40 one of 12..24 (as shuffled)
    let mut a: Vec<f32> = (16..28).map(|f| frame(&x, 0, f)).collect();
    assert!((0..16).all(|f| frame(&x, 0, f) == f as f32));
    a.sort_by(f32::total_cmp);
    assert_eq!(a, (0..12).map(|f| f as f32).collect::<Vec<_>>());
    for f in 16..40 {
        assert_eq!(frame(&x, 0, f), frame(&x, 1, f), "channels share the permutation");
        assert!(x[(f) * hw..(f + 1) * hw].iter().all(|&v| v == frame(&x, 0, f)));
    }
    let mut g2 = TorchGenerator::new(3);
    let p = g2.randperm(12);
    assert_eq!((16..28).map(|f| frame(&x, 0, f) as usize).collect::<Vec<_>>(), p);
}

#[test]
fn keyframes_interpolate_linearly_hold_at_the_ends_and_loop_when_asked() {
    let (a, b) = (vec![0.0f32, 10.0], vec![4.0f32, 2.0]);
    let keys: Vec<(usize, &[f32])> = vec![(2, &a), (6, &b)];
    let x = interpolate_keyframes(&keys, 9, false);
    let at = |x: &[f32], f: usize| [x[2 * f], x[2 * f + 1]];
    assert_eq!(at(&x, 0), [0.0, 10.0]);
    assert_eq!(at(&x, 2), [0.0, 10.0]);
    assert_eq!(at(&x, 3), [1.0, 8.0]);
    assert_eq!(at(&x, 4), [2.0, 6.0]);
    assert_eq!(at(&x, 6), [4.0, 2.0]);
    assert_eq!(at(&x, 8), [4.0, 2.0]);
    // closed loop: from frame 6 (b) to frame 2 + 9 = 11 (a): 5 frames
    let x = interpolate_keyframes(&keys, 9, true);
    assert_eq!(at(&x, 6), [4.0, 2.0]);
    let expect = |i: f64| [(1.0 - i / 5.0) as f32 * 4.0 + (i / 5.0) as f32 * 0.0, (1.0 - i / 5.0) as f32 * 2.0 + (i / 5.0) as f32 * 10.0];
    assert_eq!(at(&x, 7), expect(1.0));
    assert_eq!(at(&x, 0), expect(3.0));
    assert_eq!(at(&x, 1), expect(4.0));
    assert_eq!(at(&x, 2), [0.0, 10.0]);
    // one keyframe: every frame holds it
    let one: Vec<(usize, &[f32])> = vec![(3, &a)];
    assert!(interpolate_keyframes(&one, 5, true).chunks(2).all(|r| r == a));
}
