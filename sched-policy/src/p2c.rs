//! Power of two choices: two random eligible workers, the less loaded wins.

use crate::{Connection, Eligible, Policy, SlotId, WorkerInfo};

/// Samples two distinct eligible workers at random and picks the one with
/// fewer open connections (then fewer handed so far; then the first sampled).
///
/// Nearly as even as [`LeastConnections`](crate::LeastConnections) under load
/// while avoiding its herd behaviour when counters lag (several primaries, or
/// counters updated late). The randomness comes from a small PRNG
/// (SplitMix64) seeded by the caller, so a run is reproducible: the crate
/// reads no clock and no entropy source. Give each primary its own seed if
/// you want them to differ.
#[derive(Debug, Clone)]
pub struct PowerOfTwoChoices {
    rng: SplitMix64,
}

impl PowerOfTwoChoices {
    /// A policy whose random choices are drawn from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: SplitMix64(seed),
        }
    }
}

impl Policy for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&mut self, workers: Eligible<'_>, _conn: &Connection) -> Option<SlotId> {
        let (wa, wb) = match self.sample_fast(workers) {
            Some(pair) => pair,
            None => self.sample_counting(workers)?,
        };
        let load = |w: &WorkerInfo| (w.open(), w.handed());
        Some(if load(wb) < load(wa) { wb } else { wa }.slot())
    }
}

impl PowerOfTwoChoices {
    /// Rejection sampling over the whole table: draw a row until an
    /// eligible one comes up, then draw among the *other* rows until a second
    /// eligible one does. Exactly uniform over the eligible pairs, and O(1)
    /// when most workers are eligible (the usual case); gives up after a few
    /// draws, leaving it to `sample_counting`.
    fn sample_fast<'a>(
        &mut self,
        workers: Eligible<'a>,
    ) -> Option<(&'a WorkerInfo, &'a WorkerInfo)> {
        const DRAWS: usize = 4;
        let rows = workers.all();
        let n = rows.len();
        if n < 2 {
            return None;
        }
        let a = (0..DRAWS)
            .map(|_| self.rng.below(n))
            .find(|&i| workers.admits(&rows[i]))?;
        let b = (0..DRAWS)
            .map(|_| {
                let j = self.rng.below(n - 1);
                if j >= a { j + 1 } else { j }
            })
            .find(|&j| workers.admits(&rows[j]))?;
        Some((&rows[a], &rows[b]))
    }

    /// Counts the eligible workers and draws two distinct ranks among them;
    /// one worker alone is paired with itself.
    fn sample_counting<'a>(
        &mut self,
        workers: Eligible<'a>,
    ) -> Option<(&'a WorkerInfo, &'a WorkerInfo)> {
        let n = workers.count();
        if n <= 1 {
            let only = workers.iter().next()?;
            return Some((only, only));
        }
        let a = self.rng.below(n);
        let mut b = self.rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        Some((workers.iter().nth(a)?, workers.iter().nth(b)?))
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): one add and a finaliser per draw,
/// passes BigCrush, any seed is fine.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in `0..n` (Lemire's multiply-shift; the bias is below 2^-50
    /// for any realistic worker count).
    fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        (wide >> 64) as usize
    }
}
