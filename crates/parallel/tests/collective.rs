//! Data-parallel training through burn-collective against a single-device run with the same global
//! batch (two peers in one process; two processes through the orchestrator on 127.0.0.1), and the
//! timeout that turns a peer that never joins, or dies mid-run, into `ParallelError::Timeout`.
//!
//! burn-collective keeps one local server per backend type and process, so the tests of this binary
//! take turns on a static mutex and reset the server after a failed run.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use parallel::{run_peers, ParallelConfig, ParallelError, Peer, Reduction};

type B = Flex;
type AB = Autodiff<Flex>;
/// The device of [`AB`] (and of [`B`], which shares it).
type Dev = <AB as burn::tensor::backend::BackendTypes>::Device;

/// Global batch rows, features, training steps, learning rate.
const N: usize = 8;
const F: usize = 4;
const STEPS: usize = 3;
const LR: f64 = 1e-2;
/// Largest |difference| allowed between a parameter after data-parallel and after single-device
/// training. The two differ only in f32 summation order (shard means averaged vs one mean over the
/// batch), amplified by Adam's normalisation; measured 1.5e-8 (3 steps, two local peers) and
/// 1.9e-9 (1 step, two processes), printed by the tests as `max |diff|`.
const TOL: f32 = 1e-6;

static COLLECTIVE: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
    COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    l1: Linear<B>,
    l2: Linear<B>,
    act: Relu,
}

impl<B: Backend> Mlp<B> {
    fn new(device: &B::Device) -> Self {
        B::seed(device, 7);
        let m = Self {
            l1: LinearConfig::new(F, 16).init(device),
            l2: LinearConfig::new(16, 1).init(device),
            act: Relu::new(),
        };
        // burn initialises parameters lazily, on first use; force it now, right after seeding, so
        // that every clone (one per peer) starts from the same values.
        m.flat();
        m
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.l2.forward(self.act.forward(self.l1.forward(x)))
    }

    /// Every parameter, flattened in a fixed order.
    fn flat(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for l in [&self.l1, &self.l2] {
            out.extend(l.weight.val().into_data().iter::<f32>());
            if let Some(b) = &l.bias {
                out.extend(b.val().into_data().iter::<f32>());
            }
        }
        out
    }
}

/// Rows `rows` of step `step`'s global batch (deterministic, different every step).
fn batch(
    step: usize,
    rows: std::ops::Range<usize>,
    device: &Dev,
) -> (Tensor<AB, 2>, Tensor<AB, 2>) {
    let n = rows.len();
    let mut x = Vec::with_capacity(n * F);
    let mut y = Vec::with_capacity(n);
    for r in rows {
        let mut t = 0.0f32;
        for c in 0..F {
            let v = ((step * 31 + r * 7 + c * 3) as f32 * 0.37).sin();
            x.push(v);
            t += v * (c as f32 - 1.5);
        }
        y.push(t.tanh() + 0.1 * (r as f32));
    }
    (
        Tensor::from_data(TensorData::new(x, [n, F]), device),
        Tensor::from_data(TensorData::new(y, [n, 1]), device),
    )
}

/// Trains `model` for `steps` Adam steps on rows `rows` of each global batch (mean squared error
/// over those rows); with a peer, gradients are averaged over all peers before each step.
fn train(
    model: Mlp<AB>,
    rows: std::ops::Range<usize>,
    steps: usize,
    peer: Option<&Peer<B>>,
    device: &Dev,
) -> Result<Vec<f32>, ParallelError> {
    // Each peer owns its parameters (new autodiff leaves, same values and ids): peers that
    // share a leaf share one burn-autodiff graph and can deadlock (see `parallel::run_node`).
    let mut model = model.fork(device);
    let mut optim = AdamConfig::new().init::<AB, Mlp<AB>>();
    for step in 0..steps {
        let (x, y) = batch(step, rows.clone(), device);
        let loss = (model.forward(x) - y).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let grads = match peer {
            Some(p) => {
                p.all_reduce_gradients::<AB, _>(
                    "gradients",
                    grads,
                    &model,
                    &[],
                    Reduction::Mean,
                    device,
                )?
                .0
            }
            None => grads,
        };
        model = optim.step(LR, model, grads);
    }
    Ok(model.flat())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn single_device(steps: usize) -> Vec<f32> {
    let device = Default::default();
    train(Mlp::new(&device), 0..N, steps, None, &device).unwrap()
}

#[test]
fn two_local_peers_match_one_device_on_the_global_batch() {
    let _turn = take_turn();
    let device = Dev::default();
    let init = Mlp::<AB>::new(&device);
    let one = single_device(STEPS);

    let cfg = ParallelConfig {
        timeout: Duration::from_secs(120),
        ..ParallelConfig::local(2)
    };
    let t0 = Instant::now();
    let peers = run_peers::<B, _, ParallelError, _>(&cfg, &[device, device], |peer, dev| {
        let peer = peer.expect("two peers");
        let rows = peer.shard(N)?;
        train(init.clone(), rows, STEPS, Some(&peer), dev)
    });
    let took = t0.elapsed();
    let peers = peers.unwrap_or_else(|e| {
        parallel::reset::<B>();
        panic!("data-parallel run failed: {e}")
    });
    assert_eq!(peers.len(), 2);
    assert_eq!(
        peers[0], peers[1],
        "the peers' parameters must be bit-identical"
    );
    let d = max_abs_diff(&peers[0], &one);
    // The comparison can fail: half the batch alone ends far from the global-batch run.
    let half = train(init.clone(), 0..N / 2, STEPS, None, &device).unwrap();
    let d_half = max_abs_diff(&half, &one);
    eprintln!(
        "2 local peers vs 1 device, {} parameters, {STEPS} Adam steps: max |diff| = {d:e} \
         (tolerance {TOL:e}); one peer on half the batch without all-reduce: {d_half:e}; \
         2-peer run took {took:?}",
        one.len()
    );
    assert!(d <= TOL, "max |diff| {d:e} above {TOL:e}");
    assert!(
        d_half > 100.0 * TOL,
        "half-batch run too close ({d_half:e}) for the test to mean anything"
    );
}

#[test]
fn a_peer_that_never_joins_gives_a_timeout() {
    let _turn = take_turn();
    let timeout = Duration::from_secs(2);
    let cfg = ParallelConfig {
        timeout,
        ..ParallelConfig::local(2)
    };
    let t0 = Instant::now();
    // Only local peer 0 of 2 registers.
    let r = Peer::<B>::join(&cfg, 0, Default::default());
    let took = t0.elapsed();
    parallel::reset::<B>();
    eprintln!("peer 0 alone: {r:?} after {took:?} (timeout {timeout:?})");
    match r {
        Err(ParallelError::Timeout {
            rank: 0,
            op: "register",
            timeout: t,
        }) => assert_eq!(t, timeout),
        other => panic!("expected a register timeout, got {other:?}"),
    }
    assert!(took >= timeout, "gave up early: {took:?}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
}

/// A peer that panics after joining releases the others of its node (`Peer::abort` resets the
/// local server): peer 0 stops at once instead of after the timeout, and the error returned is the
/// cause (peer 1's panic), not peer 0's consequence.
#[test]
fn a_peer_that_dies_mid_run_stops_the_other_at_once() {
    let _turn = take_turn();
    let timeout = Duration::from_secs(20);
    let cfg = ParallelConfig {
        timeout,
        ..ParallelConfig::local(2)
    };
    let device = Dev::default();
    let init = Mlp::<AB>::new(&device);
    let t0 = Instant::now();
    let r = run_peers::<B, _, ParallelError, _>(&cfg, &[device, device], |peer, dev| {
        let peer = peer.expect("two peers");
        if peer.rank == 1 {
            panic!("peer 1 dies after joining (simulated)");
        }
        train(init.clone(), peer.shard(N)?, STEPS, Some(&peer), dev)
    });
    let took = t0.elapsed();
    parallel::reset::<B>();
    eprintln!("peer 1 died: the run returned {r:?} after {took:?} (timeout {timeout:?})");
    match r {
        Err(ParallelError::Panicked { rank: 1, .. }) => {}
        other => panic!("expected peer 1's panic as the error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A peer that hangs (alive, never calls the all-reduce): the other gets
/// `ParallelError::Timeout` after the timeout.
#[test]
fn a_peer_that_hangs_gives_the_other_a_timeout() {
    let _turn = take_turn();
    let timeout = Duration::from_secs(2);
    let cfg = ParallelConfig {
        timeout,
        ..ParallelConfig::local(2)
    };
    let device = Dev::default();
    let init = Mlp::<AB>::new(&device);
    let t0 = Instant::now();
    let r = parallel::run_node::<B, _, (), ParallelError, _, _>(
        &cfg,
        &[device, device],
        |peer, dev| {
            let peer = peer.expect("two peers");
            train(init.clone(), peer.shard(N)?, STEPS, Some(&peer), dev)
        },
        |_peer, _dev| {
            // Hangs longer than the timeout, then leaves without taking part.
            std::thread::sleep(timeout + Duration::from_secs(3));
            Err(ParallelError::Config("peer 1 hung".into()))
        },
    );
    let took = t0.elapsed();
    parallel::reset::<B>();
    eprintln!("peer 1 hung: the run returned {r:?} after {took:?} (timeout {timeout:?})");
    match r {
        Err(ParallelError::Timeout {
            rank: 0,
            op: "gradients",
            ..
        }) => {}
        other => panic!("expected peer 0's gradient all-reduce to time out, got {other:?}"),
    }
}

/// Environment of a child process of [`two_nodes`]: its presence marks the child, its value is
/// the number of training steps.
const CHILD_ENV: &str = "PARALLEL_TEST_NODE_STEPS";

fn wait_child(mut c: Child, deadline: Instant) -> std::process::Output {
    loop {
        if c.try_wait().expect("child status").is_some() {
            return c.wait_with_output().expect("child output");
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().expect("child output");
            panic!(
                "node process hung; its stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two processes, one peer each, 3 steps through the orchestrator: as on one device.
#[test]
fn two_nodes_through_the_orchestrator_match_one_device_for_three_steps() {
    two_nodes(STEPS, 1);
}

/// Two processes with two local peers each (local all-reduce in burn-collective, then the nodes'
/// sums through the orchestrator, then a local broadcast): as on one device.
#[test]
fn two_nodes_of_two_peers_match_one_device() {
    two_nodes(STEPS, 2);
}

/// Starts an orchestrator on a free port of 127.0.0.1 in this process; returns the port.
fn start_orchestrator() -> u16 {
    let orch = parallel::Orchestrator::bind(0).expect("an orchestrator");
    let port = orch.port();
    std::thread::spawn(move || orch.serve());
    port
}

/// Starts node `rank` of 2 (this test binary run again as [`node_child`]) with `devices` local
/// peers, configured only through the torchrun-like environment variables.
fn spawn_node(rank: u32, orch: u16, steps: usize, devices: usize, out: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "node_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, steps.to_string())
        .env("PARALLEL_TEST_DEVICES", devices.to_string())
        .env("ORCHESTRATOR", format!("127.0.0.1:{orch}"))
        .env("NNODES", "2")
        .env("NODE_RANK", rank.to_string())
        .env("PEER_TIMEOUT", "20")
        .env("PARALLEL_TEST_OUT", out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a node process")
}

/// Two node processes meet through an orchestrator on 127.0.0.1 and train `steps` steps on their
/// shares of each batch; their parameters must equal a single-device run's.
fn two_nodes(steps: usize, devices: usize) {
    let _turn = take_turn();
    let orch = start_orchestrator();
    let dir = std::env::temp_dir().join(format!(
        "parallel-two-nodes-{}-{devices}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = Instant::now();
    let children: Vec<Child> = (0..2u32)
        .map(|rank| {
            spawn_node(
                rank,
                orch,
                steps,
                devices,
                &dir.join(format!("node{rank}.txt")),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| wait_child(c, deadline))
        .collect();
    for (rank, out) in outs.iter().enumerate() {
        assert!(
            out.status.success(),
            "node {rank} failed: {}\n{}\n(other node: {})",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&outs[1 - rank].stderr)
        );
    }
    let took = t0.elapsed();
    let read = |r: u32| -> Vec<Vec<f32>> {
        std::fs::read_to_string(dir.join(format!("node{r}.txt")))
            .expect("a node's parameters")
            .lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let (p0, p1) = (read(0), read(1));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(p0.len(), devices);
    let one = single_device(steps);
    let d = max_abs_diff(&p0[0], &one);
    eprintln!(
        "2 nodes (processes) x {devices} peer(s) via the orchestrator vs 1 device, {steps} Adam \
         step(s): max |diff| = {d:e} (tolerance {TOL:e}); both processes took {took:?}"
    );
    for p in p0.iter().chain(&p1) {
        assert_eq!(p, &p0[0], "every peer's parameters must be bit-identical");
    }
    assert!(d <= TOL, "max |diff| {d:e} above {TOL:e}");
}

/// A node process that is killed mid-run: the other node stops with a typed error well within
/// its timeout (the orchestrator sees the closed connection and tells it), not a hang.
#[test]
fn a_killed_node_gives_the_other_an_error_within_the_timeout() {
    let _turn = take_turn();
    let orch = start_orchestrator();
    let dir = std::env::temp_dir().join(format!("parallel-killed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Many steps: the run is still going when node 1 is killed.
    let steps = 1_000_000;
    let n0 = spawn_node(0, orch, steps, 1, &dir.join("node0.txt"));
    let mut n1 = spawn_node(1, orch, steps, 1, &dir.join("node1.txt"));
    std::thread::sleep(Duration::from_secs(2));
    n1.kill().expect("kill node 1");
    let killed = Instant::now();
    let out = wait_child(n0, Instant::now() + Duration::from_secs(60));
    let took = killed.elapsed();
    let _ = n1.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("node 1 killed: node 0 stopped after {took:?} (timeout 20 s)");
    assert!(!out.status.success(), "node 0 cannot have finished");
    assert!(
        err.contains("Remote") || err.contains("Timeout"),
        "node 0 must report a typed parallel error: {err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// One node of [`two_nodes`] (run by it as a child process, configured through the torchrun-like
/// environment variables); writes one line of parameters per local peer.
#[test]
#[ignore = "child process of the two_nodes_* tests"]
fn node_child() {
    let steps: usize = std::env::var(CHILD_ENV)
        .expect("run only as a child of the two-node test")
        .parse()
        .unwrap();
    let devices: usize = std::env::var("PARALLEL_TEST_DEVICES").map_or(1, |v| v.parse().unwrap());
    let cfg = ParallelConfig::from_args(devices, None, None, None, None).unwrap();
    assert_eq!(cfg.world_size(), 2 * devices);
    let device = Dev::default();
    let init = Mlp::<AB>::new(&device);
    let out = run_peers::<B, _, ParallelError, _>(&cfg, &vec![device; devices], |peer, dev| {
        let peer = peer.expect("a peer of several");
        train(init.clone(), peer.shard(N)?, steps, Some(&peer), dev)
    })
    .unwrap();
    let mut f = std::fs::File::create(std::env::var("PARALLEL_TEST_OUT").unwrap()).unwrap();
    for p in out {
        let text: Vec<String> = p.iter().map(|v| format!("{v:e}")).collect();
        writeln!(f, "{}", text.join(" ")).unwrap();
    }
}

/// Throughput of one device against two local peers on CPU (for docs/parallel.md; timing only,
/// nothing to assert on a shared machine): `ROWS`-row global batches, 20 Adam steps.
#[test]
#[ignore = "timing for docs/parallel.md: cargo test --release -p parallel -- --ignored throughput --nocapture"]
fn throughput_one_device_vs_two_local_peers() {
    const ROWS: usize = 65536;
    const STEPS_T: usize = 20;
    let _turn = take_turn();
    let device = Dev::default();
    let init = Mlp::<AB>::new(&device);
    let t0 = Instant::now();
    train(init.clone(), 0..ROWS, STEPS_T, None, &device).unwrap();
    let one = t0.elapsed();
    let cfg = ParallelConfig {
        timeout: Duration::from_secs(600),
        ..ParallelConfig::local(2)
    };
    let t0 = Instant::now();
    run_peers::<B, _, ParallelError, _>(&cfg, &[device, device], |peer, dev| {
        let peer = peer.expect("two peers");
        train(init.clone(), peer.shard(ROWS)?, STEPS_T, Some(&peer), dev)
    })
    .unwrap();
    let two = t0.elapsed();
    let rate = |t: Duration| (ROWS * STEPS_T) as f64 / t.as_secs_f64();
    eprintln!(
        "{STEPS_T} steps of {ROWS} rows: 1 device {one:?} ({:.0} rows/s), 2 local peers {two:?} \
         ({:.0} rows/s)",
        rate(one),
        rate(two)
    );
}
