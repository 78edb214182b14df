//! Runs the `gdd` binary on edm-core's tiny fixture network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/edm-core/tests/fixtures")
        .join(name)
}

fn gdd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gdd"))
        .args(args)
        .output()
        .expect("gdd runs")
}

/// A one-step grid is written as a PNG of the grid's size; the same command with `--out` over the
/// network's weights (issue 21: it wrote a PNG over them) is refused and the weights stay intact.
#[test]
fn sample_writes_a_grid_and_never_over_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net");
    std::fs::create_dir(&net).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("edm_ddpmpp_tiny").join(f), net.join(f)).unwrap();
    }
    let grid = tmp.path().join("grid.png");
    let out = gdd(&[
        "sample",
        "--net",
        net.to_str().unwrap(),
        "--num",
        "4",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert!(w >= 2 * 16 && h >= 2 * 16 && w == h, "{w}x{h}");

    let weights = net.join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let out = gdd(&[
        "sample",
        "--net",
        net.to_str().unwrap(),
        "--num",
        "4",
        "--out",
        weights.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
}

/// A run folder inside the teacher's folder would mix checkpoints into the network (issue 21): refused
/// before anything is loaded or created.
#[test]
fn train_refuses_a_run_folder_inside_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("edm_ddpmpp_tiny");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for out in [teacher.join("run"), data.join("run")] {
        let o = gdd(&[
            "train",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--kimg",
            "1",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "accepted {}: {err}", out.display());
        assert!(err.contains("inside"), "{err}");
        assert!(!out.exists());
    }
}

/// An EDM-style command line (`--network --outdir --seeds --subdirs --batch`) writes one PNG per
/// seed under EDM's names; a second run keeps them and samples nothing; `--version`, completions
/// and the sampler choices in `--help` are there.
#[test]
fn sample_takes_edm_options_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let net = fixture("edm_ddpmpp_tiny");
    let outdir = tmp.path().join("images");
    let run = || {
        let out = gdd(&[
            "sample",
            "--network",
            net.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--seeds",
            "998-1000",
            "--subdirs",
            "--batch",
            "2",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(
        (first["sampled"].as_u64(), first["skipped"].as_u64()),
        (Some(3), Some(0))
    );
    for p in [
        "000000/000998.png",
        "000000/000999.png",
        "001000/001000.png",
    ] {
        let (w, h) = image::image_dimensions(outdir.join(p)).unwrap();
        assert_eq!((w, h), (16, 16), "{p}");
    }
    let second = run();
    assert_eq!(
        (second["sampled"].as_u64(), second["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    let text = |args: &[&str]| String::from_utf8(gdd(args).stdout).unwrap();
    assert!(text(&["--version"]).starts_with("gdd "));
    assert!(text(&["completions", "bash"]).contains("sample"));
    let help = text(&["sample", "--help"]);
    for s in [
        "--network",
        "--outdir",
        "--subdirs",
        "--seeds",
        "[alias: --net]",
    ] {
        assert!(help.contains(s), "{s} missing:\n{help}");
    }
}

/// Four 16x16 RGB PNGs: an image folder `load_training` reads.
fn tiny_image_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..4u32 {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8])
        });
        img.save(dir.join(format!("img{i}.png"))).unwrap();
    }
}

/// `gdd train` like `edm train`: resuming with another learning rate is refused naming it and the
/// checkpoint stays as it was; `--force` continues with the saved values; a longer `--kimg` is a
/// plain resume. `--preset` fills what the command line leaves out (the saved configuration has
/// the preset's lr, dlr and seed, the given batch), and `gdd presets` lists every preset.
#[test]
fn train_refuses_a_changed_resume_and_takes_presets() {
    let presets = String::from_utf8(gdd(&["presets"]).stdout).unwrap();
    for name in [
        "cifar10-uncond",
        "cifar10-cond",
        "afhqv2-64",
        "ffhq-64",
        "imagenet-64",
        "afhqv2-64-i",
    ] {
        assert!(presets.contains(name), "{name} missing:\n{presets}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&gdd(&["presets", "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().map(|a| a.len()), Some(10), "{json}");
    let Some(effnet) = assets::cached("efficientnet-lite0") else {
        eprintln!("skipped: asset efficientnet-lite0 not in cache, run `cargo run --release -p assets-cli -- fetch efficientnet-lite0`");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    tiny_image_folder(&data);
    let teacher = fixture("edm_ddpmpp_tiny");
    let train = |out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gdd"))
            .args(["train", "--teacher"])
            .arg(&teacher)
            .arg("--data")
            .arg(&data)
            .arg("--outdir")
            .arg(out)
            .arg("--effnet")
            .arg(&effnet)
            .args([
                "--d-res=32",
                "--no-fid",
                "--checkpoint-every=1",
                "--grid-every=100",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let saved = |out: &Path| -> serde_json::Value {
        let s = std::fs::read(out.join("checkpoint/state.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&s).unwrap()["config"].clone()
    };
    let run = tmp.path().join("run");
    let o = train(&run, &["--batch=2", "--kimg=0.002", "--lr=0.001"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let state = run.join("checkpoint/state.json");
    let before = std::fs::read(&state).unwrap();

    let o = train(&run, &["--batch=2", "--kimg=0.004", "--lr=0.002"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {err}");
    assert!(
        err.contains("lr (saved 0.001, given 0.002)") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), before);

    let o = train(
        &run,
        &["--batch=2", "--kimg=0.004", "--lr=0.002", "--force"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("--force") && err.contains("resumed"), "{err}");
    assert_eq!(saved(&run)["lr"], 0.001);
    assert_eq!(saved(&run)["total_kimg"], 0.004);

    let o = train(&run, &["--batch=2", "--kimg=0.006", "--lr=0.001", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(saved(&run)["total_kimg"], 0.006);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (summary["step"].as_u64(), summary["kimg"].as_f64()),
        (Some(3), Some(0.006)),
        "{summary}"
    );

    let pre = tmp.path().join("preset");
    let o = train(
        &pre,
        &[
            "--preset=afhqv2-64",
            "--batch=2",
            "--kimg=0.002",
            "--precision=f32",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("preset afhqv2-64"), "{err}");
    let c = saved(&pre);
    assert_eq!(
        (c["lr"].as_f64(), c["dlr"].as_f64()),
        (Some(2e-5), Some(4e-5)),
        "{c}"
    );
    assert_eq!(
        (c["batch_size"].as_u64(), c["seed"].as_u64()),
        (Some(2), Some(42)),
        "{c}"
    );
    // A discriminator side EfficientNet-Lite0's strides cannot take: a typed error, no panic.
    let o = Command::new(env!("CARGO_BIN_EXE_gdd"))
        .args(["train", "--teacher"])
        .arg(&teacher)
        .arg("--data")
        .arg(&data)
        .arg("--outdir")
        .arg(tmp.path().join("odd"))
        .arg("--effnet")
        .arg(&effnet)
        .args(["--d-res=112", "--no-fid", "--batch=2", "--kimg=0.002"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("112"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = gdd(&[
        "train",
        "--preset=nonesuch",
        "--teacher=x",
        "--data=y",
        "--outdir=z",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nonesuch"), "{err}");
}

/// `--backbone vgg16_bn` needs torchvision's vgg16_bn state dict: without it, and with a file of
/// other shapes (dist-distill's width/16 golden fixture), a typed error that names the flag or the
/// tensor and file, before a run folder is written. (Training with vgg16_bn and the configuration
/// recording it: dist-distill's driver tests, on a width-reduced network.)
#[test]
fn train_refuses_a_missing_or_wrong_vgg16_bn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    tiny_image_folder(&data);
    let vgg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/dist-distill/tests/fixtures/vgg16_bn_w16.pth");
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gdd"))
            .args(["train", "--teacher"])
            .arg(fixture("edm_ddpmpp_tiny"))
            .arg("--data")
            .arg(&data)
            .arg("--outdir")
            .arg(&run)
            .args(["--d-res=32", "--no-fid", "--batch=2", "--kimg=0.002"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = train(&["--backbone=vgg16_bn"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("vgg16_bn state dict"),
        "{err}"
    );
    let o = train(&["--vgg16-bn", vgg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("features.0.weight") && err.contains("vgg16_bn_w16.pth"),
        "{err}"
    );
    assert!(!run.join("checkpoint").exists());
    // Two discriminators (the reference's CIFAR-10 pair), comma-separated: the list is parsed and
    // its vgg16_bn still needs the file; a repeated backbone is refused by name.
    let o = train(&["--backbone=vgg16_bn,efficientnet_lite0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("vgg16_bn state dict"),
        "{err}"
    );
    let o = train(&[
        "--backbone",
        "tf_efficientnet_lite0",
        "--backbone",
        "tf_efficientnet_lite0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("listed twice"), "{err}");
    let o = train(&["--backbone=vgg16_bn,resnet50"]);
    assert!(!o.status.success());
    assert!(!run.join("checkpoint").exists());
}

/// `gdd analyze --data` runs the innate one-step analysis on real images noised to each sigma and
/// records that input; without `--data` it is the pure-noise analysis, with other numbers.
#[test]
fn analyze_on_real_images_and_on_pure_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    tiny_image_folder(&data);
    let analyze = |out: &Path, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_gdd"))
            .args(["analyze", "--teacher"])
            .arg(fixture("edm_ddpmpp_tiny"))
            .arg("--outdir")
            .arg(out)
            .args(["--num=2", "--batch=2", "--sigmas=80,1,0.1"])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out.join("innate.json")).unwrap()
    };
    let real = analyze(
        &tmp.path().join("real"),
        &["--data", data.to_str().unwrap()],
    );
    let noise = analyze(&tmp.path().join("noise"), &[]);
    assert!(real.contains("images"), "{real}");
    assert_ne!(real, noise);
    assert!(tmp.path().join("real/innate.png").is_file());
}
