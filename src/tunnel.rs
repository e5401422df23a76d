//! An upgraded connection (WebSocket, or whatever protocol a `101
//! Switching Protocols` answer switched to) after its `101`: bytes copied
//! both ways between the client and the instance until both sides close,
//! or until nothing moves either way for the idle time-out.
//!
//! The tunnel stays on the instance it was opened to whatever happens to
//! the routing table (a swap moves only new connections, SPEC §12). Its
//! idle time-out is the upstream read time-out, as nginx's
//! `proxy_read_timeout` governs a proxied WebSocket: an app that keeps a
//! socket open sends pings more often than that. A side that closes its
//! half (EOF) has the other side's write half shut, and the tunnel goes on
//! one way until that side closes too.

use pingora_timeout::fast_timeout::fast_timeout;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One read's worth, each way.
const BUF: usize = 16 * 1024;

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub to_client: u64,
    pub to_instance: u64,
}

enum Step {
    FromClient(std::io::Result<usize>),
    FromInstance(std::io::Result<usize>),
}

/// Copy between `client` and `instance` until both have closed, a write
/// fails, or nothing moved for `idle` (a write that cannot go out for
/// `idle`, to a client that stopped reading, ends it too).
pub async fn run<C, U>(client: &mut C, instance: &mut U, idle: Duration) -> Moved
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut from_client = vec![0u8; BUF];
    let mut from_instance = vec![0u8; BUF];
    let (mut client_open, mut instance_open) = (true, true);
    let mut moved = Moved::default();
    while client_open || instance_open {
        let step = fast_timeout(idle, async {
            tokio::select! {
                r = client.read(&mut from_client), if client_open => Step::FromClient(r),
                r = instance.read(&mut from_instance), if instance_open => Step::FromInstance(r),
            }
        })
        .await;
        match step {
            Err(_) => break,
            Ok(Step::FromClient(Ok(0))) => {
                client_open = false;
                let _ = fast_timeout(idle, instance.shutdown()).await;
            }
            Ok(Step::FromInstance(Ok(0))) => {
                instance_open = false;
                let _ = fast_timeout(idle, client.shutdown()).await;
            }
            Ok(Step::FromClient(Ok(n))) => {
                if !send(instance, &from_client[..n], idle).await {
                    break;
                }
                moved.to_instance += n as u64;
            }
            Ok(Step::FromInstance(Ok(n))) => {
                if !send(client, &from_instance[..n], idle).await {
                    break;
                }
                moved.to_client += n as u64;
            }
            Ok(Step::FromClient(Err(_)) | Step::FromInstance(Err(_))) => break,
        }
    }
    moved
}

/// Write and flush `bytes` within `idle`.
async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8], idle: Duration) -> bool {
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    matches!(fast_timeout(idle, write).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_a_half_close_is_passed_on() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut instance, mut instance_end) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move {
            run(&mut client_end, &mut instance_end, Duration::from_secs(5)).await
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        instance.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        instance.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        // the client closes its half: the instance reads the end, and can
        // still answer before it closes too
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(instance.read_to_end(&mut rest).await.unwrap(), 0);
        instance.write_all(b"bye").await.unwrap();
        drop(instance);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        let moved = copy.await.unwrap();
        assert_eq!(
            moved,
            Moved {
                to_client: 8,
                to_instance: 4
            }
        );
    }

    #[tokio::test]
    async fn a_quiet_tunnel_ends_after_the_idle_time_out() {
        let (_client, mut client_end) = tokio::io::duplex(64);
        let (_instance, mut instance_end) = tokio::io::duplex(64);
        let moved = run(
            &mut client_end,
            &mut instance_end,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(moved, Moved::default());
    }
}
