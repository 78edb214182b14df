//! EDM training: the loss goes down on a tiny U-Net, EMA and freezing behave, resume is exact.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::tensor::{Tensor, TensorData};
use edm_core::{
    edm_loss, ema_update, EdmConfig, EdmPrecond, ImageDataset, ModelType, TrainOptions, Trainer,
};

type AB = Autodiff<Flex>;

fn tiny_config() -> EdmConfig {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 8, 1, 2);
    c.model_channels = Some(16);
    c.channel_mult = Some(vec![1, 1]);
    c.num_blocks = Some(1);
    c.attn_resolutions = Some(vec![4]);
    c
}

/// Two classes of 8×8 images: a bright left half or a bright top half, with a little jitter.
fn toy_data(n: usize) -> ImageDataset {
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::new();
    for i in 0..n {
        let class = i % 2;
        for y in 0..8 {
            for x in 0..8 {
                let on = if class == 0 { x < 4 } else { y < 4 };
                let jitter = ((i * 31 + y * 7 + x * 3) % 11) as f32 / 50.0;
                images.push(if on { 0.8 - jitter } else { -0.8 + jitter });
            }
        }
        labels.push(class);
    }
    ImageDataset {
        images,
        labels: Some(labels),
        num_classes: 2,
        len: n,
        channels: 1,
        resolution: 8,
    }
}

fn options(seed: u64) -> TrainOptions {
    TrainOptions {
        batch_size: 8,
        total_kimg: 0.032,
        lr: 2e-3,
        lr_rampup_kimg: 0.0,
        ema_halflife_kimg: 0.05,
        ema_rampup_ratio: Some(0.05),
        seed,
        checkpoint_every: 2,
        ..Default::default()
    }
}

fn fixed_loss(net: &EdmPrecond<Flex>, data: &ImageDataset) -> f64 {
    let d = Default::default();
    let n = 16;
    let images = Tensor::<Flex, 4>::from_data(
        TensorData::new(data.images[..n * 64].to_vec(), [n, 1, 8, 8]),
        &d,
    );
    let sigma = Tensor::<Flex, 1>::from_data(
        TensorData::new(
            (0..n)
                .map(|i| 0.05 * 1.5f32.powi(i as i32))
                .collect::<Vec<_>>(),
            [n],
        ),
        &d,
    );
    let noise =
        edm_core::StackedRng::new(&(0..n as u64).collect::<Vec<_>>()).randn::<Flex>([1, 8, 8], &d);
    let mut onehot = vec![0f32; n * 2];
    for i in 0..n {
        onehot[i * 2 + i % 2] = 1.0;
    }
    let labels = Tensor::<Flex, 2>::from_data(TensorData::new(onehot, [n, 2]), &d);
    let l = edm_loss(net, images, sigma, noise, Some(labels), 0.5);
    l.mean().into_scalar() as f64
}

#[test]
fn a_few_steps_lower_the_loss() {
    let device = Default::default();
    let data = toy_data(64);
    let mut t = Trainer::<AB>::new(&tiny_config(), options(1), &device).unwrap();
    let before = fixed_loss(&t.net.valid(), &data);
    for _ in 0..30 {
        let r = t.step(&data).unwrap();
        assert!(r.loss.is_finite());
    }
    let after = fixed_loss(&t.net.valid(), &data);
    println!("fixed-batch loss {before:.4} -> {after:.4}");
    assert!(after < 0.7 * before, "loss {before} -> {after}");
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let device = Default::default();
    let data = toy_data(32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();

    let mut full = Trainer::<AB>::new(&cfg, options(7), &device).unwrap();
    for _ in 0..4 {
        full.step(&data).unwrap();
    }

    let mut first = Trainer::<AB>::new(&cfg, options(7), &device).unwrap();
    first.step(&data).unwrap();
    first.step(&data).unwrap();
    first.checkpoint(dir.path()).unwrap();
    drop(first);
    let mut resumed = Trainer::<AB>::resume(dir.path(), &device).unwrap();
    assert_eq!(resumed.state.step, 2);
    resumed.step(&data).unwrap();
    resumed.step(&data).unwrap();

    assert_eq!(
        full.net.valid().state_dict(),
        resumed.net.valid().state_dict()
    );
    assert_eq!(full.ema.state_dict(), resumed.ema.state_dict());
    // the checkpoint's EMA is a loadable EDM model
    let ema = edm_core::load_precond::<Flex>(dir.path().join("checkpoint"), &device).unwrap();
    assert_eq!(ema.named_tensors().len(), full.ema.named_tensors().len());
}

#[test]
fn ema_lerps_towards_the_network() {
    let device = Default::default();
    let cfg = tiny_config();
    let net = EdmPrecond::<Flex>::init(&cfg, 3, &device).unwrap();
    let zero = net.clone().map(&mut Zero);
    let half = ema_update(zero, &net, 0.25);
    for ((n, _, a), (_, _, b)) in net.state_dict().into_iter().zip(half.state_dict()) {
        if n.ends_with("resample_filter") {
            continue;
        }
        for (x, y) in a.iter().zip(&b) {
            assert!((0.75 * x - y).abs() <= 1e-6 * x.abs().max(1.0), "{n}");
        }
    }
}

struct Zero;
impl burn::module::ModuleMapper<Flex> for Zero {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<Flex, D>>,
    ) -> burn::module::Param<Tensor<Flex, D>> {
        param.map(|t| t.zeros_like())
    }
}

#[test]
fn frozen_parameters_stay_bit_identical() {
    let device = Default::default();
    let data = toy_data(16);
    let net = EdmPrecond::<AB>::init(&tiny_config(), 5, &device).unwrap();
    let frozen = |n: &str| n.contains(".enc.") && n.contains("conv");
    let net = net.freeze_where(frozen);
    let before = net.valid().state_dict();
    let mut t = Trainer::from_network(net, options(2), &device);
    t.step(&data).unwrap();
    t.step(&data).unwrap();
    let after = t.net.valid().state_dict();
    let mut changed = 0;
    for ((n, _, a), (_, _, b)) in before.iter().zip(&after) {
        if frozen(n) {
            assert_eq!(a, b, "{n} changed although frozen");
        } else if a != b {
            changed += 1;
        }
    }
    assert!(changed > 10);
}

/// `train` holds its output folder for the whole run (a second writer is refused) and removes what
/// an interrupted write left there before it starts.
#[test]
fn train_locks_its_folder_and_removes_leftovers() {
    let data = toy_data(16);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.json.tmp"), b"torn").unwrap();
    let held = formats::RunLock::acquire(dir.path()).unwrap();
    let refused = edm_core::train::<AB>(
        &tiny_config(),
        &data,
        TrainOptions {
            total_kimg: 0.016,
            ..options(0)
        },
        dir.path(),
        &Default::default(),
        &mut |_| {},
    );
    assert!(refused.is_err(), "a second writer was let in");
    drop(held);
    let t = edm_core::train::<AB>(
        &tiny_config(),
        &data,
        TrainOptions {
            total_kimg: 0.016,
            ..options(0)
        },
        dir.path(),
        &Default::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(t.state.step, 2);
    assert!(!dir.path().join("metrics.json.tmp").exists());
    assert!(dir.path().join("checkpoint/training_state.json").is_file());
}

/// `--kimg 0` (or a batch of 0) used to run no step, write nothing, and let the CLI announce a model
/// (issue 21): both are refused before the folder is touched beyond its lock.
#[test]
fn zero_steps_and_zero_batch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_data(8);
    let device = Default::default();
    for (kimg, batch, want) in [(0.0, 8, "0 training steps"), (0.032, 0, "batch size 0")] {
        let opts = TrainOptions {
            total_kimg: kimg,
            batch_size: batch,
            ..options(0)
        };
        let out = dir.path().join(format!("run-{batch}"));
        let err = edm_core::train::<AB>(&tiny_config(), &data, opts, &out, &device, &mut |_| {})
            .err()
            .expect("refused");
        assert!(err.to_string().contains(want), "{err}");
        assert!(!out.join("checkpoint").exists());
    }
}

/// The checkpoint's burn records are written through `formats::write_atomic` (bytes recorder);
/// they must still be exactly what the file recorder loads on resume.
#[test]
fn checkpoint_records_are_named_mpk_files() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let data = toy_data(16);
    let trainer = edm_core::train::<AB>(
        &tiny_config(),
        &data,
        options(3),
        dir.path(),
        &device,
        &mut |_| {},
    )
    .unwrap();
    for f in ["net.mpk", "ema.mpk", "optim.mpk"] {
        assert!(dir.path().join("checkpoint").join(f).is_file(), "{f}");
    }
    let resumed = Trainer::<AB>::resume(dir.path(), &device).unwrap();
    assert_eq!(resumed.state.step, trainer.state.step);
    let a = trainer.ema.clone().into_record();
    let b = resumed.ema.clone().into_record();
    let flat = |r| {
        let m = EdmPrecond::<Flex>::init(&tiny_config(), 0, &device)
            .unwrap()
            .load_record(r);
        fixed_loss(&m, &data)
    };
    assert_eq!(flat(a), flat(b));
}
