//! `loadtest echo-server`: the floor of this machine. A tokio-tungstenite server with the same
//! codec limits as the hub's sessions that answers every text frame with the same text (and
//! WebSocket pings with pongs), one task per socket. Whatever Switchyard spends beyond this is
//! the price of its protocol, routing and bookkeeping. Run as its own process by `compare`.

use std::net::SocketAddr;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub async fn serve(listen: SocketAddr) -> Result<()> {
    let socket = if listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(4096)?;
    println!("listening on {}", listener.local_addr()?);
    let config = switchyard::session::ws_config(64 * 1024);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("echo-server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        if ws.send(Message::Text(t)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Ping(_)) => {
                        let _ = ws.flush().await;
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
    }
}
