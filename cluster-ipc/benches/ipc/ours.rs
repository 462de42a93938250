//! Our figures: the channel's round trips, throughput and descriptor
//! passing, each against a peer process.

use super::*;

pub(crate) fn rtt_small_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["echo-small"])?;
    let secs = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let mut msg = Small {
            seq: 0,
            text: TEXT.into(),
        };
        let mut once = async |seq: u64| -> anyhow::Result<()> {
            msg.seq = seq;
            tx.send(&msg).await?;
            match rx.recv::<Small>().await? {
                Incoming::User(back, _) if back.seq == seq => Ok(()),
                other => bail!("unexpected {other:?}"),
            }
        };
        for i in 0..n / 10 + 10 {
            once(i).await?;
        }
        let t = Instant::now();
        for i in 0..n {
            once(i).await?;
        }
        anyhow::Ok(t.elapsed().as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

pub(crate) fn rtt_big_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["echo-blob"])?;
    let secs = runtime()?.block_on(async {
        let (tx, mut rx) = open(fd).await?;
        let blob = Blob(vec![7; 1 << 20]);
        let mut total = Duration::ZERO;
        for i in 0..n + 2 {
            let t = Instant::now();
            tx.send(&blob).await?;
            match rx.recv::<Blob>().await? {
                Incoming::User(back, _) if back.0.len() == blob.0.len() => {}
                other => bail!("unexpected {other:?}"),
            }
            if i >= 2 {
                total += t.elapsed();
            }
        }
        anyhow::Ok(total.as_secs_f64() / n as f64)
    })?;
    reap(child)?;
    Ok(secs)
}

pub(crate) fn throughput_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["sink-small", &n.to_string()])?;
    let per_s = runtime()?.block_on(async {
        let (tx, rx) = open(fd).await?;
        let mut msg = Small {
            seq: 0,
            text: TEXT.into(),
        };
        // The receiver is read while the sender sends: the peer's window
        // updates arrive on it.
        let count = tokio::spawn(final_count(rx));
        let t = Instant::now();
        for i in 0..n {
            msg.seq = i;
            tx.send(&msg).await?;
        }
        expect_count(count, n).await?;
        anyhow::Ok(n as f64 / t.elapsed().as_secs_f64())
    })?;
    reap(child)?;
    Ok(per_s)
}

pub(crate) fn fd_pass_ours(n: u64) -> anyhow::Result<f64> {
    let (child, fd) = spawn_peer(&["sink-fd", &n.to_string()])?;
    let per_s = runtime()?.block_on(async {
        let (tx, rx) = open(fd).await?;
        let file = std::fs::File::open("/dev/null")?;
        let count = tokio::spawn(final_count(rx));
        let t = Instant::now();
        for i in 0..n {
            tx.send_with_fds(i, vec![file.try_clone()?.into()]).await?;
        }
        expect_count(count, n).await?;
        anyhow::Ok(n as f64 / t.elapsed().as_secs_f64())
    })?;
    reap(child)?;
    Ok(per_s)
}

/// Reads the receiver until the peer's one message, the count it received
/// (window updates are applied on the way).
async fn final_count(mut rx: cluster_ipc::Receiver) -> anyhow::Result<u64> {
    match rx.recv::<u64>().await? {
        Incoming::User(count, _) => Ok(count),
        other => bail!("unexpected {other:?}"),
    }
}

async fn expect_count(
    count: tokio::task::JoinHandle<anyhow::Result<u64>>,
    n: u64,
) -> anyhow::Result<()> {
    let count = count.await??;
    anyhow::ensure!(count == n, "the peer counted {count} of {n}");
    Ok(())
}
