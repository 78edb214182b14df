//! EDM sampling throughput: one-step D(z·80, 80) vs Heun-35 (18 steps), images per second.
//! - CPU (Flex): the tiny DDPM++ fixture (16×16×3, 1M parameters), batch 4.
//! - CUDA (`--features cuda`): EDM's DDPM++ CIFAR-10 network (32×32×3, 55.7M parameters, random
//!   weights), batch 64.

use std::path::Path;

use burn::tensor::backend::Backend;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edm_core::{sample, EdmPrecond, SamplerConfig, Solver, StackedRng};

fn bench_net<B: Backend>(
    c: &mut Criterion,
    label: &str,
    net: &EdmPrecond<B>,
    batch: usize,
    device: &B::Device,
) {
    let cfg = &net.config;
    let (ch, res) = (cfg.img_channels, cfg.img_resolution);
    let seeds: Vec<u64> = (0..batch as u64).collect();
    let z = StackedRng::new(&seeds).randn::<B>([ch, res, res], device);
    let mut group = c.benchmark_group(format!("edm_sampling/{label}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    for (name, solver) in [("onestep", Solver::OneStep), ("heun35", Solver::Heun)] {
        let sc = SamplerConfig::default();
        group.bench_with_input(BenchmarkId::new(name, batch), &solver, |b, &solver| {
            b.iter(|| {
                let out = sample(net, z.clone(), None, solver, &sc, None, &mut |_, _| {}).unwrap();
                // synchronise: read the result back
                out.into_data()
            })
        });
    }
    group.finish();
}

fn cpu_tiny(c: &mut Criterion) {
    type B = burn::backend::Flex;
    let device = Default::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/edm-core/tests/fixtures/edm_ddpmpp_tiny");
    let net = edm_core::load_precond::<B>(dir, &device).expect("fixture loads");
    bench_net(c, "cpu_tiny_ddpmpp", &net, 4, &device);
}

#[cfg(feature = "cuda")]
fn cuda_ddpmpp_cifar10(c: &mut Criterion) {
    type B = burn::backend::Cuda;
    let device = Default::default();
    let net =
        EdmPrecond::<B>::init(&edm_core::EdmConfig::ddpmpp_cifar10(), 0, &device).expect("init");
    bench_net(c, "cuda_ddpmpp_cifar10", &net, 64, &device);
}

#[cfg(not(feature = "cuda"))]
fn cuda_ddpmpp_cifar10(_c: &mut Criterion) {
    eprintln!("skipped: DDPM++ CIFAR-10 benchmark needs `--features cuda`");
}

criterion_group!(benches, cpu_tiny, cuda_ddpmpp_cifar10);
criterion_main!(benches);
