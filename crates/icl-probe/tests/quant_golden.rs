//! Dequantisation of every supported ggml block type equals the Python `gguf` package's (gguf-py,
//! llama.cpp's own library) exactly: 0 ulp, on
//! - real tensor slices of every type in the four real GGUF files (SmolLM2-135M Q4_1, Qwen2.5-Coder
//!   0.5B/1.5B Q4_K_M, Gemma 3 270M Q4_K_M): rows of real tensors, raw bytes copied from the files,
//! - random block bytes of every type (with sane f16 scales), which reach bit patterns real files
//!   rarely do (every 6-bit packed scale, both signs of every scale),
//! - gguf-py's own quantiser output where it has one.
//!
//! Both sides compute each element with the same f32 operations in the same order, so the tolerance
//! is zero. Fixture: `fixtures/quant_golden.bin`, made by `tools/make_quant_golden.py` (format in its
//! header); it is small and always present, so this test never skips.

mod common;

use std::collections::BTreeMap;

use common::fixture;
use icl_probe::gguf::{dequantize, GgmlType};

struct Case {
    name: String,
    type_id: u32,
    n: usize,
    raw: Vec<u8>,
    expected: Vec<f32>,
}

fn read_cases() -> Vec<Case> {
    let bytes = std::fs::read(fixture("quant_golden.bin")).expect("quant_golden.bin");
    assert_eq!(&bytes[..8], b"QGOLD1\n\0", "fixture magic");
    let mut at = 8;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap());
    let n_cases = u32_at(take(4)) as usize;
    let mut cases = Vec::with_capacity(n_cases);
    for _ in 0..n_cases {
        let len = u16::from_le_bytes(take(2).try_into().unwrap()) as usize;
        let name = String::from_utf8(take(len).to_vec()).unwrap();
        let type_id = u32_at(take(4));
        let n = u32_at(take(4)) as usize;
        let n_bytes = u32_at(take(4)) as usize;
        let raw = take(n_bytes).to_vec();
        let expected = take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        cases.push(Case {
            name,
            type_id,
            n,
            raw,
            expected,
        });
    }
    cases
}

#[test]
fn every_block_type_matches_gguf_py_exactly() {
    let cases = read_cases();
    // type name -> (cases, elements, max |diff|, elements whose bits differ)
    let mut per_type: BTreeMap<&'static str, (usize, usize, f32, usize)> = BTreeMap::new();
    for case in &cases {
        let ty = GgmlType::from_id(case.type_id)
            .unwrap_or_else(|name| panic!("{}: unsupported type {name}", case.name));
        let got = dequantize(ty, &case.raw, case.n).unwrap();
        let entry = per_type.entry(ty.name()).or_default();
        entry.0 += 1;
        entry.1 += case.n;
        for (i, (g, e)) in got.iter().zip(&case.expected).enumerate() {
            assert!(g.is_finite(), "{}: element {i} is {g}", case.name);
            entry.2 = entry.2.max((g - e).abs());
            if g.to_bits() != e.to_bits() {
                entry.3 += 1;
            }
        }
        assert!(
            got == case.expected,
            "{}: first difference at {:?}",
            case.name,
            got.iter()
                .zip(&case.expected)
                .position(|(g, e)| g != e)
                .map(|i| (i, got[i], case.expected[i]))
        );
    }
    println!("type   cases  elements  max|diff|  bit-differing");
    for (name, (n_cases, n_elems, max_diff, bits)) in &per_type {
        println!("{name:<6} {n_cases:>5} {n_elems:>9} {max_diff:>10e} {bits:>14}");
        // Identical values; a sign-of-zero difference would be the only allowed bit difference.
        assert_eq!(*max_diff, 0.0, "{name}");
    }
    // Every supported type has a golden case.
    for id in 0..64 {
        if let Ok(ty) = GgmlType::from_id(id) {
            assert!(
                per_type.contains_key(ty.name()),
                "no golden case for {}",
                ty.name()
            );
        }
    }
}

/// The real-file slices are in the fixture for every type the four real GGUF files use.
#[test]
fn fixture_holds_real_slices_of_every_type_in_the_real_files() {
    let cases = read_cases();
    for (model, types) in [
        ("smollm2-135m-gguf", &["Q4_1", "Q8_0", "F32"][..]),
        (
            "qwen2.5-coder-0.5b-q4km",
            &["Q5_0", "Q8_0", "Q4_K", "Q6_K", "F32"],
        ),
        ("qwen2.5-coder-1.5b-q4km", &["Q4_K", "Q6_K", "F32"]),
        (
            "gemma-3-270m-q4km",
            &["Q5_0", "Q8_0", "Q4_K", "Q6_K", "F32"],
        ),
    ] {
        for ty in types {
            let found = cases.iter().any(|c| {
                c.name.starts_with(&format!("real {model} "))
                    && GgmlType::from_id(c.type_id).is_ok_and(|t| t.name() == *ty)
            });
            assert!(found, "no real {ty} slice of {model} in the fixture");
        }
    }
}
