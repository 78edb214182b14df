//! fid::precision_recall against a numpy re-implementation of StyleGAN3's metric
//! (tools/make_pr_reference.py) on TF-Inception features of 20 CIFAR-10 vs 20 CIFAR-100 images.

use std::path::PathBuf;

fn reference() -> std::collections::BTreeMap<String, formats::HostTensor> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pr_reference.safetensors");
    formats::read_safetensors(&p).unwrap()
}

#[test]
fn matches_stylegan3_reference_for_k_1_3_5() {
    let r = reference();
    let (real, gen) = (&r["real"], &r["gen"]);
    let dim = real.shape[1];
    for (k, key) in [(1, "pr_k1_f64"), (3, "pr_k3_f64"), (5, "pr_k5_f64")] {
        let (p, rc) =
            fid::precision_recall::precision_recall(&real.data, &gen.data, dim, k).unwrap();
        let want = &r[key].data;
        println!("k = {k}: precision {p}, recall {rc}; reference {want:?}");
        // Fractions of 20 (exact in float64); the reference is stored as float32.
        assert!(
            (p - want[0] as f64).abs() < 1e-6,
            "k = {k}: precision {p} vs {}",
            want[0]
        );
        assert!(
            (rc - want[1] as f64).abs() < 1e-6,
            "k = {k}: recall {rc} vs {}",
            want[1]
        );
    }
    // StyleGAN3 casts features to float16 first; on these features that changes nothing.
    assert_eq!(r["pr_k3_f16"].data, r["pr_k3_f64"].data);
}

#[test]
fn inception_score_matches_stylegan3_reference() {
    let r = reference();
    let l = &r["is_logits"];
    let logits: Vec<f64> = l.data.iter().map(|&v| v as f64).collect();
    let (m, s) = fid::inception_score::inception_score(&logits, l.shape[1], 10).unwrap();
    let want = &r["is_10"].data;
    println!("IS {m} ± {s}; reference {want:?}");
    assert!(
        (m - want[0] as f64).abs() <= 1e-5 * want[0] as f64,
        "mean {m} vs {}",
        want[0]
    );
    assert!(
        (s - want[1] as f64).abs() <= 1e-4 * want[0] as f64,
        "std {s} vs {}",
        want[1]
    );
}
