//! alloc, buffer_len, fill, upload, download, copy; name, synchronize and
//! peak_device_bytes. Data movement: every backend gives the same bits.
use pulsefocus_core::Backend;

use super::{assert_same_bits, buffer, cpu, read, Rng, SEEDS};

/// Lengths around the GPU pool's 256-element size classes and its grid
/// strides, and one of a single element.
const LENGTHS: [usize; 6] = [1, 7, 255, 256, 257, 4099];

/// The memory operations on `b`, returning every buffer read back whole.
fn memory_run<B: Backend>(b: &B, len: usize, src: &[f32], fill: f32) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let part = len / 2 + 1;

    // alloc: zero-filled, exactly `len` elements.
    let zeros = b.alloc(len);
    assert_eq!(b.buffer_len(&zeros), len, "buffer_len after alloc({len})");
    out.push(("alloc".into(), read(b, &zeros)));

    // upload of fewer values than the buffer holds: the rest stays zero.
    let mut up = b.alloc(len + 3);
    b.upload(&src[..part], &mut up);
    out.push(("upload of a prefix".into(), read(b, &up)));

    // fill of a prefix: the rest keeps its values.
    let mut filled = buffer(b, src);
    b.fill(&mut filled, part, fill);
    out.push(("fill of a prefix".into(), read(b, &filled)));

    // download of a prefix.
    let whole = buffer(b, src);
    let mut prefix = vec![f32::NAN; part];
    b.download(&whole, &mut prefix);
    out.push(("download of a prefix".into(), prefix));

    // copy of a prefix into a longer, non-zero buffer: the rest keeps its values.
    let mut dst: Vec<f32> = src.iter().map(|v| -v - 1.0).collect();
    dst.extend([5.0; 11]);
    let mut copied = buffer(b, &dst);
    b.copy(part, &whole, &mut copied);
    out.push(("copy of a prefix".into(), read(b, &copied)));
    assert_same_bits("copy's source (an input)", &read(b, &whole), src);
    out
}

pub fn memory_matches<B: Backend>(b: &B) {
    let reference = cpu();
    for seed in SEEDS {
        for len in LENGTHS {
            let mut rng = Rng::new(seed);
            let src = rng.values(len, -1.0, 1.0);
            let fill = rng.uniform(-3.0, 3.0);
            let want = memory_run(&reference, len, &src, fill);
            let got = memory_run(b, len, &src, fill);
            for ((what, g), (_, w)) in got.iter().zip(&want) {
                assert_same_bits(&format!("{what}, len {len}, seed {seed}"), g, w);
            }
            // The reference itself is as documented.
            let part = len / 2 + 1;
            assert!(want[0].1.iter().all(|&v| v == 0.0));
            assert_same_bits("upload", &want[1].1[..part], &src[..part]);
            assert!(want[1].1[part..].iter().all(|&v| v == 0.0));
            assert!(want[2].1[..part].iter().all(|&v| v == fill));
            assert_same_bits("fill's untouched rest", &want[2].1[part..], &src[part..]);
        }
    }
}

/// `name`, `synchronize` and `peak_device_bytes`: no panic, and a device
/// that reports its memory has held at least what is alive now.
pub fn device_queries_are_sane<B: Backend>(b: &B) {
    assert!(!b.name().trim().is_empty(), "name is empty");
    let len = 1 << 18;
    let mut big = b.alloc(len);
    b.fill(&mut big, len, 1.5);
    b.synchronize();
    if let Some(peak) = b.peak_device_bytes() {
        assert!(
            peak >= len * 4,
            "peak_device_bytes {peak} below a live 1 MiB buffer"
        );
        drop(big);
        let after = b.peak_device_bytes().unwrap_or(0);
        assert!(after >= peak, "the peak went down from {peak} to {after}");
    } else {
        assert!(read(b, &big).iter().all(|&v| v == 1.5));
    }
    b.synchronize();
}
