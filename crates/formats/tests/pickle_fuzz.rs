//! Hostile and random pickle bytes are typed errors, never panics (moved here from fid's
//! robustness tests together with the reader).

use formats::pickle;
use proptest::prelude::*;

fn any_global(_: &str, _: &str) -> bool {
    true
}

/// The shape of a real allow-list: torch's rebuild function, storages and `OrderedDict`.
fn torch_like(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("torch._utils", "_rebuild_tensor_v2") | ("collections", "OrderedDict")
    ) || (module == "torch" && name.ends_with("Storage"))
}

fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

proptest! {
    // PROPTEST_CASES=N raises the count for a longer fuzzing session.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes never panic the pickle reader.
    #[test]
    fn fuzz_pickle_random(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = pickle::load(&bytes, &any_global);
        let _ = pickle::load_prefix(&bytes, &torch_like);
    }

    /// Random bytes after a protocol header, drawn from the opcodes the reader knows.
    #[test]
    fn fuzz_pickle_opcodes(ops in proptest::collection::vec(
        prop::sample::select(b"().0125NJKM\x8a\x88\x89GXUTBC\x8c)]}tlduaesq\x94hjQRb\x81\x85\x86\x87\x01\x00\xff".to_vec()), 0..256)) {
        let mut bytes = vec![0x80, 2];
        bytes.extend(ops);
        let _ = pickle::load(&bytes, &any_global);
    }
}
