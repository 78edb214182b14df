//! Feature extraction throughput of the FID network (images/s): uint8 32×32 CIFAR-sized images →
//! resize to 299 → TF-Inception → pool3. CPU (Flex) always; CUDA with `--features cuda`.
//! Needs the `inception-2015-12-05` asset in the cache (skips with a message otherwise).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fid::InceptionV3;

const BATCH: usize = 4;

fn images<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = (0..BATCH * 3 * 32 * 32)
        .map(|i| ((i * 7919) % 256) as f32)
        .collect();
    Tensor::from_data(TensorData::new(data, [BATCH, 3, 32, 32]), device)
}

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str, device: B::Device) {
    let Some(path) = assets::cached(fid::INCEPTION_ASSET) else {
        eprintln!(
            "skipped: asset {} not in cache, run `cargo run --release -p assets-cli -- fetch {}`",
            fid::INCEPTION_ASSET,
            fid::INCEPTION_ASSET
        );
        return;
    };
    let net = InceptionV3::<B>::from_torchscript(path, &device).expect("load Inception");
    let x = images::<B>(&device);
    let mut group = c.benchmark_group("fid_features");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(12));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let f = net.features(x.clone()).expect("features");
            // Reading back forces the computation on asynchronous backends.
            f.into_data()
        })
    });
    group.finish();
}

fn cpu(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "cpu_flex_batch4_32px", Default::default());
}

#[cfg(feature = "cuda")]
fn cuda(c: &mut Criterion) {
    bench_backend::<burn::backend::Cuda>(c, "cuda_batch4_32px", Default::default());
}

#[cfg(not(feature = "cuda"))]
criterion_group!(benches, cpu);
#[cfg(feature = "cuda")]
criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
