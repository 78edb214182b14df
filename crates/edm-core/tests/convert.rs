//! `edm convert` on real EDM snapshot pickles made by NVlabs/edm's own training-loop code
//! (tools/make_edm_snapshots.py): the converted network must compute what EDM computed.

mod common;

use std::path::PathBuf;

use common::*;
use edm_core::convert::{convert, parse_snapshot, read_snapshot};
use edm_core::{load_precond, EdmError, ModelType, PrecondKind};
use formats::pickle::PickleError;

fn snapshot(name: &str) -> PathBuf {
    fixture_dir("edm_snapshots").join(format!("{name}.pkl"))
}

/// Converts, loads the written folder as `edm` does, and compares the denoiser with EDM's output.
fn check(name: &str, precond: PrecondKind, model: ModelType, label_dim: usize, augment_dim: usize) {
    let out = tempfile::tempdir().unwrap();
    let report = convert(&snapshot(name), out.path(), "ema").unwrap();
    assert_eq!(report.model_type, model);
    let device = Default::default();
    let net = load_precond::<B>(out.path(), &device).unwrap();
    assert_eq!(net.config.precond, precond);
    assert_eq!(net.config.label_dim, label_dim);
    assert_eq!(net.config.augment_dim, augment_dim);

    let exp = read_safetensors_map(name);
    let x = tensor::<4>(&exp["x"]);
    let sigma = tensor::<1>(&exp["sigma"]);
    let labels = labels(&exp);
    let aug = (augment_dim > 0).then(|| tensor::<2>(&exp["augment_labels"]));
    let out = values(net.forward_with_augment(x, sigma, labels, aug));
    let e = rel_err(&out, &exp["denoised_f32"].data);
    println!(
        "{name}: {} tensors, {} parameters, rel err vs EDM {e:.3e}",
        report.tensors, report.parameters
    );
    assert!(e <= 1e-5, "{name}: rel err {e}");
}

fn read_safetensors_map(name: &str) -> std::collections::BTreeMap<String, edm_core::HostTensor> {
    edm_core::read_safetensors(
        &fixture_dir("edm_snapshots").join(format!("{name}_expected.safetensors")),
    )
    .unwrap()
}

#[test]
fn conditional_ncsnpp_ve_with_augmentation_matches_edm() {
    check(
        "ncsnpp_cond_ve",
        PrecondKind::VEPrecond,
        ModelType::SongUNet,
        10,
        9,
    );
}

#[test]
fn ddpmpp_vp_matches_edm() {
    check(
        "ddpmpp_vp",
        PrecondKind::VPPrecond,
        ModelType::SongUNet,
        0,
        0,
    );
}

#[test]
fn conditional_adm_edm_matches_edm() {
    check(
        "adm_cond_edm",
        PrecondKind::EDMPrecond,
        ModelType::DhariwalUNet,
        10,
        0,
    );
}

#[test]
fn recorded_kwargs_become_the_config() {
    let snap = read_snapshot(&snapshot("ncsnpp_cond_ve"), "ema").unwrap();
    let c = &snap.config;
    assert_eq!(snap.class_name, "VEPrecond");
    assert!(
        snap.module_src_len > 10_000,
        "the module source is kept as data"
    );
    assert_eq!(c.embedding_type, edm_core::EmbeddingType::Fourier);
    assert_eq!(c.encoder_type, edm_core::EncoderType::Residual);
    assert_eq!(c.channel_mult_noise, 2);
    assert_eq!(c.resample_filter, vec![1.0, 3.0, 3.0, 1.0]);
    assert_eq!(c.channel_mult, Some(vec![1, 2]));
    assert_eq!(c.dropout, Some(0.13));
    assert_eq!((c.img_resolution, c.img_channels), (8, 3));
    // Fourier `freqs` and the resampling filters are buffers and belong to the state dict.
    assert!(snap.tensors.contains_key("model.map_noise.freqs"));
    // Another entry of the snapshot is not a network.
    match read_snapshot(&snapshot("ncsnpp_cond_ve"), "loss_fn") {
        Err(EdmError::Snapshot { message, .. }) => {
            assert!(message.contains("EDMLoss"), "{message}")
        }
        other => panic!("expected a Snapshot error, got {other:?}"),
    }
    match read_snapshot(&snapshot("ncsnpp_cond_ve"), "nope") {
        Err(EdmError::Snapshot { message, .. }) => {
            assert!(message.contains("augment_pipe"), "{message}")
        }
        other => panic!("expected a Snapshot error, got {other:?}"),
    }
}

#[test]
fn a_pickle_that_runs_code_is_refused() {
    // pickle.dumps({'ema': os.system('touch /tmp/pwned')}) at protocol 4 (hand-assembled, as CPython
    // writes it): the reader stops at the global, before anything could be called.
    let mut p = vec![0x80, 4, b'}', 0x94];
    for s in ["ema", "posix", "system"] {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
        p.push(0x94);
    }
    p.extend_from_slice(&[0x93, 0x94, 0x8c, 16]);
    p.extend_from_slice(b"touch /tmp/pwned");
    p.extend_from_slice(&[0x94, 0x85, 0x94, b'R', 0x94, b's', b'.']);
    match parse_snapshot(&p, "ema", std::path::Path::new("evil.pkl")) {
        Err(EdmError::Pickle {
            source: PickleError::ForbiddenGlobal { module, name, .. },
            ..
        }) => assert_eq!((module.as_str(), name.as_str()), ("posix", "system")),
        other => panic!("expected ForbiddenGlobal, got {other:?}"),
    }
}

#[test]
fn truncated_and_tampered_snapshots_are_typed_errors() {
    let data = std::fs::read(snapshot("ddpmpp_vp")).unwrap();
    let path = std::path::Path::new("cut.pkl");
    for cut in [10, data.len() / 3, data.len() - 1] {
        match parse_snapshot(&data[..cut], "ema", path) {
            Err(EdmError::Pickle { .. }) | Err(EdmError::Snapshot { .. }) => {}
            other => panic!(
                "cut at {cut}: expected a typed error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // One float32 element count inside a storage blob changed: the storage and its id disagree.
    let needle = b"FloatStorage";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    // After the storage's pickles comes the u64 count; find it as the first 8 bytes after `.]` ... `.`
    // of the key list: simplest is to flip a byte of the key list's key so the list no longer names it.
    let mut bad = data.clone();
    let key_start = bad[at..].iter().position(|&b| b == b'X').unwrap() + at + 5;
    bad[key_start] ^= 0x01;
    match parse_snapshot(&bad, "ema", path) {
        Err(EdmError::Snapshot { message, .. }) => assert!(message.contains("key"), "{message}"),
        other => panic!("expected a Snapshot error, got {:?}", other.map(|_| ())),
    }
}
