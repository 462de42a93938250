//! What cluster-core's benches share: the median and spread of repeated
//! runs, and a row of the report (one JSON line on stdout, which `cargo
//! xtask bench` reads, and a readable line on stderr).

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
