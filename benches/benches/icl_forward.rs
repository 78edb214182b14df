//! SmolLM2-135M forward throughput on the CPU (Flex backend): batch 16 × 64 tokens, plain and with
//! a full residual cache (every `hook_resid_*` of every layer). Reference: HF transformers did about
//! 600 tokens/s on this CPU with 2 threads. Skips when the GGUF asset is not cached.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icl_probe::{Batch, HookSpec, Model};

type B = burn::backend::Flex;

fn bench(c: &mut Criterion) {
    let Some(path) = assets::cached("smollm2-135m-gguf") else {
        eprintln!("skipped: asset smollm2-135m-gguf not in cache, run `cargo run --release -p assets-cli -- fetch smollm2-135m-gguf`");
        return;
    };
    let device = Default::default();
    let model = Model::<B>::load(&path, &device).expect("load SmolLM2");
    let (b, t) = (16usize, 64usize);
    let rows: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..t)
                .map(|i| ((r * 131 + i * 17) % 49000 + 100) as u32)
                .collect()
        })
        .collect();
    let batch = Batch::from_ids(rows, 0).unwrap();
    let mut g = c.benchmark_group("smollm2_forward_16x64");
    g.sample_size(10);
    g.throughput(Throughput::Elements((b * t) as u64));
    let plain = HookSpec::new();
    g.bench_function("no_cache", |bch| {
        bch.iter(|| {
            model
                .forward(&batch, &plain)
                .unwrap()
                .logits
                .unwrap()
                .dims()
        })
    });
    let cached = HookSpec::new().cache(["blocks.*.hook_resid_*"]);
    g.bench_function("full_resid_cache", |bch| {
        bch.iter(|| model.forward(&batch, &cached).unwrap().cache.len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
