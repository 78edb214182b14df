//! Median-of-runs timing with device synchronisation.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;

pub struct Timer {
    pub runs: usize,
    pub warmup: usize,
}

impl Timer {
    /// Runs `f` `warmup` times untimed, then `runs` times timed, syncing the device around each run, and
    /// returns the median duration.
    pub fn median<B: Backend, T>(&self, device: &B::Device, mut f: impl FnMut() -> T) -> Duration {
        for _ in 0..self.warmup {
            drop(f());
            sync::<B>(device);
        }
        let mut times: Vec<Duration> = (0..self.runs.max(1))
            .map(|_| {
                sync::<B>(device);
                let start = Instant::now();
                let out = f();
                sync::<B>(device);
                let elapsed = start.elapsed();
                drop(out);
                elapsed
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    }
}

fn sync<B: Backend>(device: &B::Device) {
    if let Err(e) = B::sync(device) {
        eprintln!("error: device sync failed: {e:?}");
        std::process::exit(1);
    }
}

/// One Markdown table row.
pub fn row(workload: &str, shape: &str, precision: &str, time: Duration, throughput: &str) {
    println!(
        "| {workload} | {shape} | {precision} | {:.3} ms | {throughput} |",
        time.as_secs_f64() * 1e3
    );
}

/// A rate with an SI prefix that keeps three significant digits readable on a CPU and on a GPU alike.
pub fn rate(per_second: f64, unit: &str) -> String {
    let (scale, prefix) = match per_second {
        r if r >= 1e12 => (1e12, "T"),
        r if r >= 1e9 => (1e9, "G"),
        r if r >= 1e6 => (1e6, "M"),
        r if r >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    format!("{:.2} {prefix}{unit}", per_second / scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_pick_a_readable_prefix() {
        assert_eq!(super::rate(93.4e12, "FLOP/s"), "93.40 TFLOP/s");
        assert_eq!(super::rate(2.5e9, "FLOP/s"), "2.50 GFLOP/s");
        assert_eq!(super::rate(612.0, "tok/s"), "612.00 tok/s");
    }
}
