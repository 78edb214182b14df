//! Interleaved timing of `flex_kernels::conv::conv2d` against burn-flex's own `conv2d` on the
//! convolution shapes of the workspace's networks (Inception-v3, EDM DDPM++, the primitives row).
//!
//! `cargo build --release -p flex-kernels --example conv_bench && target/release/examples/conv_bench`
//! (2 rayon threads by default, `RAYON_NUM_THREADS` to change). Prints one line per shape: median
//! ms and GFLOP/s of both, and their ratio.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};

type B = Flex;

/// CPU seconds (user + system, all threads) this process has used: a rate per CPU-second is far
/// less sensitive to other processes' load than a wall-clock rate on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // `rest` starts at field 3 (state, not numeric, filtered out): utime is then f[10], stime f[11].
    f.get(10)
        .zip(f.get(11))
        .map(|(u, s)| (u + s) / 100.0)
        .unwrap_or(0.0)
}

struct Shape {
    name: &'static str,
    n: usize,
    c_in: usize,
    c_out: usize,
    hw: usize,
    k: [usize; 2],
    stride: usize,
    pad: [usize; 2],
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let filter = std::env::args().nth(1).unwrap_or_default();
    let shapes = [
        Shape {
            name: "conv3x3 64->64 32px b16 (primitives)",
            n: 16,
            c_in: 64,
            c_out: 64,
            hw: 32,
            k: [3, 3],
            stride: 1,
            pad: [1, 1],
        },
        Shape {
            name: "conv3x3 32->32 147px b8 (Inception stem)",
            n: 8,
            c_in: 32,
            c_out: 32,
            hw: 149,
            k: [3, 3],
            stride: 1,
            pad: [0, 0],
        },
        Shape {
            name: "conv3x3/2 3->32 299px b8 (Inception first)",
            n: 8,
            c_in: 3,
            c_out: 32,
            hw: 299,
            k: [3, 3],
            stride: 2,
            pad: [0, 0],
        },
        Shape {
            name: "conv3x3 32->64 147px b8 pad1 (Inception)",
            n: 8,
            c_in: 32,
            c_out: 64,
            hw: 147,
            k: [3, 3],
            stride: 1,
            pad: [1, 1],
        },
        Shape {
            name: "conv1x1 64->80 73px b8 (Inception)",
            n: 8,
            c_in: 64,
            c_out: 80,
            hw: 73,
            k: [1, 1],
            stride: 1,
            pad: [0, 0],
        },
        Shape {
            name: "conv3x3 80->192 73px b8 (Inception)",
            n: 8,
            c_in: 80,
            c_out: 192,
            hw: 73,
            k: [3, 3],
            stride: 1,
            pad: [0, 0],
        },
        Shape {
            name: "conv1x7 128->128 17px b8 (Inception C)",
            n: 8,
            c_in: 128,
            c_out: 128,
            hw: 17,
            k: [1, 7],
            stride: 1,
            pad: [0, 3],
        },
        Shape {
            name: "conv5x5 48->64 35px b8 (Inception A)",
            n: 8,
            c_in: 48,
            c_out: 64,
            hw: 35,
            k: [5, 5],
            stride: 1,
            pad: [2, 2],
        },
        Shape {
            name: "conv3x3 256->256 32px b8 (DDPM++)",
            n: 8,
            c_in: 256,
            c_out: 256,
            hw: 32,
            k: [3, 3],
            stride: 1,
            pad: [1, 1],
        },
        Shape {
            name: "conv3x3 256->256 8px b8 (DDPM++)",
            n: 8,
            c_in: 256,
            c_out: 256,
            hw: 8,
            k: [3, 3],
            stride: 1,
            pad: [1, 1],
        },
        Shape {
            name: "conv1x1 256->256 16px b8 (DDPM++ skip)",
            n: 8,
            c_in: 256,
            c_out: 256,
            hw: 16,
            k: [1, 1],
            stride: 1,
            pad: [0, 0],
        },
        Shape {
            name: "conv3x3 3->128 32px b8 (DDPM++ first)",
            n: 8,
            c_in: 3,
            c_out: 128,
            hw: 32,
            k: [3, 3],
            stride: 1,
            pad: [1, 1],
        },
    ];
    let dev = Default::default();
    for s in shapes.iter().filter(|s| s.name.contains(&filter)) {
        let x = Tensor::<B, 4>::random(
            [s.n, s.c_in, s.hw, s.hw],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let w = Tensor::<B, 4>::random(
            [s.c_out, s.c_in, s.k[0], s.k[1]],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let b = Tensor::<B, 1>::random([s.c_out], Distribution::Normal(0.0, 1.0), &dev);
        let opts = ConvOptions::new([s.stride; 2], s.pad, [1, 1], 1);
        let time = |ours: bool| {
            let t = Instant::now();
            let y = if ours {
                flex_kernels::conv::conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone())
            } else {
                burn_conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone())
            };
            let dims = y.dims();
            drop(y);
            (t.elapsed().as_secs_f64(), dims)
        };
        let (first, dims) = time(true);
        time(false);
        // Enough repetitions for ~0.4 s per side: /proc's CPU times tick at 10 ms.
        let reps = reps.max((0.4 / first.max(1e-4)).ceil() as usize).min(500);
        let (mut ours, mut burn) = (Vec::new(), Vec::new());
        let (mut cpu_ours, mut cpu_burn) = (0.0, 0.0);
        for _ in 0..reps {
            let c0 = cpu_seconds();
            ours.push(time(true).0);
            let c1 = cpu_seconds();
            burn.push(time(false).0);
            cpu_burn += cpu_seconds() - c1;
            cpu_ours += c1 - c0;
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (o, bu) = (med(&mut ours), med(&mut burn));
        let flops = 2.0 * (dims[0] * dims[1] * dims[2] * dims[3] * s.c_in * s.k[0] * s.k[1]) as f64;
        println!(
            "{:<44} ours {:8.2} ms {:6.1} GFLOP/s {:6.1}/CPU-s | burn-flex {:8.2} ms {:6.1} GFLOP/s {:6.1}/CPU-s | {:.2}x wall, {:.2}x CPU",
            s.name,
            o * 1e3,
            flops / o / 1e9,
            flops * reps as f64 / cpu_ours / 1e9,
            bu * 1e3,
            flops / bu / 1e9,
            flops * reps as f64 / cpu_burn / 1e9,
            bu / o,
            cpu_burn / cpu_ours
        );
    }
}
