//! The tunnel over an in-memory pipe: streams both ways, independent flow
//! control, keep-alive and the dead-peer timeout.

use std::time::Duration;

use drover_tunnel::{mux, ws, Keepalive, Mode, WsIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

async fn pair(keepalive: Keepalive) -> (mux::Session, mux::Session) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let a = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws::config())).await;
    let b = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws::config())).await;
    (
        mux::start(WsIo::new(a, keepalive), Mode::Client),
        mux::start(WsIo::new(b, keepalive), Mode::Server),
    )
}

#[tokio::test]
async fn a_slow_stream_does_not_stall_the_others() {
    let (client, mut server) = pair(Keepalive::default()).await;
    // The server side: the first stream is never read; the others echo.
    let held = tokio::spawn(async move {
        let stalled = server.inbound.next().await.unwrap();
        while let Some(mut s) = server.inbound.next().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
        drop(stalled);
    });
    let mut flood = client.opener.open().await.unwrap();
    // Far more than a stream's window: the writer must block, alone.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        for _ in 0..128 {
            if tokio::time::timeout(Duration::from_secs(2), flood.write_all(&chunk))
                .await
                .is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    for i in 0..20 {
        let mut s = client.opener.open().await.unwrap();
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .expect("an echo stream answered while another stream was stalled")
            .unwrap();
        assert_eq!(got, msg);
    }
    let sent = writer.await.unwrap();
    assert!(
        sent < 8 * 1024 * 1024,
        "the unread stream accepted {sent} bytes: flow control did not hold it back"
    );
    client.opener.close();
    held.abort();
}

#[tokio::test]
async fn a_silent_peer_ends_the_session() {
    let keepalive = Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    };
    // The far end is a WebSocket that nobody reads: no pongs, no data.
    let (a, b) = tokio::io::duplex(1024 * 1024);
    let a = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws::config())).await;
    let session = mux::start(WsIo::new(a, keepalive), Mode::Client);
    let done = tokio::time::timeout(Duration::from_secs(5), session.opener.closed()).await;
    assert!(done.is_ok(), "the session noticed the silent peer");
    assert!(session.opener.open().await.is_err());
    let ended = session.driver.await.unwrap();
    assert!(
        ended.as_ref().is_err_and(|e| e.is_silence()),
        "it ended for the silence: {ended:?}"
    );
    drop(b);
}

#[tokio::test]
async fn pings_keep_an_idle_session_alive() {
    let keepalive = Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    };
    let (client, mut server) = pair(keepalive).await;
    tokio::spawn(async move {
        while let Some(mut s) = server.inbound.next().await {
            let mut hi = [0u8; 2];
            let _ = s.read_exact(&mut hi).await;
            let _ = s.write_all(b"ok").await;
            let _ = s.shutdown().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !client.opener.is_closed(),
        "an idle but live session stayed up"
    );
    // A yamux stream reaches the other end with its first bytes.
    let mut s = client.opener.open().await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "ok");
}
