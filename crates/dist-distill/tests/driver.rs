//! The training driver `train::run` (what `gdd train` calls) on a tiny random teacher and a
//! random-weight EfficientNet-Lite0: it writes the run's outputs, reports its events, and a run
//! stopped and resumed from its output folder ends bit-identical to an uninterrupted one, with one
//! metrics line per step, and a second run on a held folder is refused.

use burn::backend::Flex;
use burn::module::AutodiffModule;
use dist_distill::disc::DiscConfig;
use dist_distill::effnet::EfficientNetLite0;
use dist_distill::train::{run, GddConfig, GddTrainer, RunEvent, RunOptions};
use edm_core::EdmPrecond;

mod common;
use common::{dataset, teacher, AB};

/// Batch 4: 0.014 kimg is 4 steps (R1 at step 2), 0.006 kimg is 2.
fn config(total_kimg: f64) -> GddConfig {
    GddConfig {
        batch_size: 4,
        total_kimg,
        lr: 1e-3,
        dlr: 1e-3,
        r1_interval: 2,
        disc: DiscConfig {
            input_res: 32,
            cout: 8,
            ..DiscConfig::default()
        },
        seed: 3,
        ..GddConfig::default()
    }
}

fn options(out: &std::path::Path) -> RunOptions<Flex> {
    RunOptions {
        out_dir: out.to_path_buf(),
        checkpoint_every: 2,
        grid_every: 2,
        parallel: parallel::ParallelConfig::local(1),
        fid: None,
    }
}

/// Runs the driver; returns the trainer and the (start step, resumed, step events) it reported.
fn drive(out: &std::path::Path, total_kimg: f64) -> (GddTrainer<AB>, (u64, bool, Vec<u64>)) {
    let (mut start, mut steps) = (None, Vec::new());
    let tr = run(
        teacher(),
        EfficientNetLite0::random(1, &Default::default()),
        config(total_kimg),
        &dataset(16),
        &options(out),
        &Default::default(),
        &mut |e| match e {
            RunEvent::Start {
                step,
                resumed,
                total_steps,
                ..
            } => {
                assert_eq!(total_steps, (total_kimg * 1000.0 / 4.0).ceil() as u64);
                start = Some((step, resumed));
            }
            RunEvent::Step(m) => steps.push(m.step),
            RunEvent::Fid(_) => panic!("FID without a schedule"),
        },
    )
    .unwrap();
    let (step, resumed) = start.expect("a start event");
    (tr, (step, resumed, steps))
}

fn bits(net: &EdmPrecond<Flex>) -> Vec<(String, Vec<u32>)> {
    net.state_dict()
        .into_iter()
        .map(|(n, _, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn run_writes_its_outputs_and_resumes_bit_identically() {
    let a_dir = tempfile::tempdir().unwrap();
    let (a, (start, resumed, steps)) = drive(a_dir.path(), 0.014);
    assert_eq!((start, resumed, steps), (0, false, vec![1, 2, 3, 4]));
    for f in [
        "checkpoint/state.json",
        "checkpoint/ema/config.json",
        "config.json",
        "freeze_report.json",
        "grid-000000.png",
        "grid-000002.png",
        "grid-000004.png",
    ] {
        assert!(a_dir.path().join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(a_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    // TensorBoard's copy: one file, a G loss per step, the three grids with their PNG bytes.
    let events = formats::tfevents::event_files(a_dir.path()).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = formats::read_events(&events[0]).unwrap();
    let g_steps: Vec<i64> = ev.scalars("loss/G").iter().map(|s| s.0).collect();
    assert_eq!(g_steps, vec![1, 2, 3, 4]);
    let r1_steps = metrics
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["r1_penalty"].is_number())
        .count();
    assert!(r1_steps > 0);
    assert_eq!(ev.scalars("loss/R1_penalty").len(), r1_steps);
    let grids = ev.images("samples/ema_grid");
    assert_eq!(grids.iter().map(|g| g.0).collect::<Vec<_>>(), vec![0, 2, 4]);
    let png = std::fs::read(a_dir.path().join("grid-000004.png")).unwrap();
    assert_eq!(grids[2].1, png.as_slice());

    // The same run stopped after 2 steps, then extended to 4 from its output folder.
    let b_dir = tempfile::tempdir().unwrap();
    let (b, (start, resumed, steps)) = drive(b_dir.path(), 0.006);
    assert_eq!((start, resumed, steps), (0, false, vec![1, 2]));
    drop(b);
    // A step logged after the checkpoint (a crash before the next one) is dropped on resume, and a
    // second writer on the folder is refused while one holds it.
    let log = b_dir.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"step\":3,\"g_loss\":0.0}\n");
    std::fs::write(&log, text).unwrap();
    let held = formats::RunLock::acquire(b_dir.path()).unwrap();
    let refused = run(
        teacher(),
        EfficientNetLite0::random(1, &Default::default()),
        config(0.014),
        &dataset(16),
        &options(b_dir.path()),
        &Default::default(),
        &mut |_| {},
    );
    assert!(refused.is_err(), "a second writer was let in");
    drop(held);
    let (b, (start, resumed, steps)) = drive(b_dir.path(), 0.014);
    assert_eq!((start, resumed, steps), (2, true, vec![3, 4]));
    let metrics_b = std::fs::read_to_string(b_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics_b.lines().count(), 4);
    // Same losses per step (the throughput field differs).
    let losses = |m: &str| -> Vec<(f64, f64)> {
        m.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["g_loss"].as_f64().unwrap(),
                    v["d_loss_real"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(losses(&metrics), losses(&metrics_b));
    assert_eq!(bits(&a.g.valid()), bits(&b.g.valid()), "generator differs");
    assert_eq!(bits(&a.ema), bits(&b.ema), "EMA differs");
}

/// The discriminator on vgg16_bn features (a width/16 network of vgg16_bn's layout, random
/// weights): the run trains, the checkpoint's configuration names the backbone, and a trainer
/// handed a backbone other than the configuration's is refused (the checkpoint must say what the
/// discriminator really projects).
#[test]
fn run_with_a_vgg16_bn_backbone_records_it() {
    use dist_distill::disc::BackboneKind;
    use dist_distill::vgg::{Vgg16Bn, VggConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(0.008);
    cfg.disc.backbone = BackboneKind::Vgg16Bn;
    let dev = Default::default();
    let vgg = || Vgg16Bn::<AB>::random(&VggConfig::width_divided(16), 5, &dev);
    let tr = run(
        teacher(),
        vgg(),
        cfg.clone(),
        &dataset(16),
        &options(dir.path()),
        &dev,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(tr.state.step, 2);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["config"]["disc"]["backbone"], "vgg16_bn");
    let Err(err) = GddTrainer::new(teacher(), EfficientNetLite0::random(1, &dev), cfg, &dev) else {
        panic!("an EfficientNet backbone under a vgg16_bn configuration was accepted")
    };
    let err = err.to_string();
    assert!(
        err.contains("vgg16_bn") && err.contains("tf_efficientnet_lite0"),
        "{err}"
    );
}
