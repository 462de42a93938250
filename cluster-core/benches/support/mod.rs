//! What cluster-core's benches share: how they were asked to run, the
//! median and spread of repeated runs, and a row of the report (one JSON
//! line on stdout, which `cargo xtask bench` reads, and a readable line on
//! stderr).

/// How a bench binary was asked to run, from its arguments: `None` when
/// cargo-nextest only lists its tests (`--list`: one smoke test,
/// `quick_smoke`, which nextest then runs without `--bench`, so quick);
/// otherwise whether to run the quick workload (`--quick`, or a debug build
/// run without `--bench`, as `cargo test --all-targets` does).
pub(crate) fn quick(args: &[String]) -> Option<bool> {
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("quick_smoke: test");
        }
        return None;
    }
    let under_cargo_test = cfg!(debug_assertions) && !args.iter().any(|a| a == "--bench");
    Some(under_cargo_test || args.iter().any(|a| a == "--quick"))
}

/// The median of `v` (not empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Half the range of `v`: (max - min) / 2.
pub(crate) fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / 2.0
}

/// Prints a row: `ours` against `raw` (the median of each, and its spread).
pub(crate) fn row(
    id: &str,
    what: &str,
    unit: &str,
    better: &str,
    ours: &[f64],
    raw: Option<&[f64]>,
    target: &str,
) {
    let o = median(ours);
    let (r, rs) = match raw {
        Some(raw) => {
            let r = median(raw);
            eprintln!("{id}: ours {o:.3}, raw {r:.3}, ratio {:.3}", o / r);
            (format!("{r:.3}"), format!("{:.3}", spread(raw)))
        }
        None => {
            eprintln!("{id}: ours {o:.3}");
            ("null".to_owned(), "null".to_owned())
        }
    };
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"unit\":\"{unit}\",\"better\":\"{better}\",\"ours\":{o:.3},\"ours_spread\":{:.3},\"raw\":{r},\"raw_spread\":{rs},\"target\":\"{target}\"}}",
        spread(ours)
    );
}

/// Wait until `n` workers of `cluster` listen (TCP, Unix-domain or an
/// inherited socket); the last TCP port announced (0 if none). An error if
/// a worker ends first or nothing happens for 30 s.
pub(crate) async fn until_listening<M: cluster_core::Payload>(
    cluster: &mut cluster_core::Cluster<M>,
    n: usize,
) -> anyhow::Result<u16> {
    use cluster_core::Event;
    let (mut port, mut listening) = (0, 0);
    while listening < n {
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), cluster.next_event())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the cluster stopped"))?;
        match event {
            Event::Listening { addr, .. } => {
                port = addr.port();
                listening += 1;
            }
            Event::ListeningOn { .. } => listening += 1,
            Event::Exit { worker, exit, .. } => {
                anyhow::bail!("worker {worker} ended early: {exit}")
            }
            _ => {}
        }
    }
    Ok(port)
}
