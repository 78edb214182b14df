//! Load time and prefill throughput of one model file, for the compact-weights proof (issue 12).
//!
//! `cargo run --release -p icl-probe --example weights_bench -- MODEL [--weights compact|f32]
//!  [--tokens 100] [--batches 1,8] [--reps 1] [--dump FILE] [--compare FILE]`
//!
//! Runs fixed token ids (a deterministic spread over the vocabulary: throughput does not depend on
//! which tokens), prints the load time and prefill tokens/s per batch size, and optionally dumps the
//! last-position logits (raw little-endian f32) or compares them with an earlier dump (max |Δ|).
//! Peak memory: run it under `/usr/bin/time -v`.

use std::time::Instant;

use burn::backend::Flex;
use icl_probe::{Batch, HookSpec, LoadOptions, LogitsMode, Model, WeightStorage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = args.first().ok_or("usage: weights_bench MODEL [options]")?;
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tokens: usize = opt("--tokens").map_or(Ok(100), |s| s.parse())?;
    let reps: usize = opt("--reps").map_or(Ok(1), |s| s.parse())?;
    let batches: Vec<usize> = opt("--batches")
        .unwrap_or_else(|| "1,8".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;

    let weights = match opt("--weights").as_deref() {
        None | Some("auto") => WeightStorage::Auto,
        Some("compact") => WeightStorage::Compact,
        Some("f32") => WeightStorage::F32,
        Some(other) => return Err(format!("--weights {other}: compact, f32 or auto").into()),
    };
    let device = Default::default();
    let t0 = Instant::now();
    let model = Model::<Flex>::load_with(model_path, &device, &LoadOptions { weights })?;
    let wb = model.weight_bytes();
    println!(
        "load_s {:.2} (weights: {:.1} MB dense, {:.1} MB packed)",
        t0.elapsed().as_secs_f64(),
        wb.dense as f64 / 1e6,
        wb.packed as f64 / 1e6
    );
    let vocab = model.config().vocab_size;

    let mut dumped = Vec::new();
    for &b in &batches {
        let rows: Vec<Vec<u32>> = (0..b)
            .map(|r| {
                (0..tokens)
                    .map(|i| ((i * 7919 + r * 104_729 + 13) % vocab.min(30_000)) as u32)
                    .collect()
            })
            .collect();
        let batch = Batch::from_ids(rows, 0)?;
        // Best of `reps` runs, in wall-clock and in CPU time of this process (the machine may be
        // shared: CPU seconds are what the forward pass itself costs).
        let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
        let mut vals = Vec::new();
        for _ in 0..reps {
            let (t, c) = (Instant::now(), cpu_seconds());
            let out = model.forward(&batch, &HookSpec::new().logits(LogitsMode::Last))?;
            let logits = out.logits.ok_or("no logits")?;
            vals = logits.into_data().convert::<f32>().into_vec::<f32>()?;
            wall = wall.min(t.elapsed().as_secs_f64());
            cpu = cpu.min(cpu_seconds() - c);
        }
        let n = (b * tokens) as f64;
        println!(
            "batch {b} x {tokens} tokens: {wall:.2} s wall ({:.1} tok/s), {cpu:.2} CPU s ({:.1} tok per CPU s)",
            n / wall,
            n / cpu
        );
        dumped.extend(vals);
    }
    if let Some(path) = opt("--dump") {
        let bytes: Vec<u8> = dumped.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes)?;
    }
    if let Some(path) = opt("--compare") {
        let bytes = std::fs::read(path)?;
        let other: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if other.len() != dumped.len() {
            return Err(
                format!("dump has {} values, this run {}", other.len(), dumped.len()).into(),
            );
        }
        let max = dumped
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = other.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!("max |Δ logit| {max:.3e} (max |logit| {scale:.2})");
    }
    Ok(())
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 ticks/s);
/// NaN elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}
