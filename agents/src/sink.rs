//! A discard sink: acknowledges every metric at once and does nothing else.
//!
//! It exists to measure the agents themselves: if the load generator cannot outrun a server that does
//! no work, its figures about real servers mean nothing. It speaks just enough of both protocols:
//! WebSocket at `/` (a `metric.ack` per `metric`, a `metrics.ack` per `metrics`, echoing `seq` found
//! by a byte search, not a parse), and `POST /metrics` answered `202`.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

/// The ack for one message, built without parsing it.
pub fn ack_for(text: &str) -> String {
    if text.contains(r#""type":"metrics""#) {
        let accepted = text.matches(r#""serverId""#).count();
        return format!(r#"{{"type":"metrics.ack","accepted":{accepted}}}"#);
    }
    let seq = text.find(r#""seq":"#).map(|i| {
        let rest = &text[i + 6..];
        &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
    });
    match seq {
        Some(seq) => format!(r#"{{"type":"metric.ack","serverId":"sink","seq":{seq}}}"#),
        None => r#"{"type":"metric.ack","serverId":"sink"}"#.to_owned(),
    }
}

async fn session(socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        if sink.feed(Message::Text(ack_for(&text).into())).await.is_err() {
            return;
        }
        // Answer everything that arrived together with one flush.
        while let Some(Some(Ok(Message::Text(text)))) = futures_util::FutureExt::now_or_never(stream.next()) {
            if sink.feed(Message::Text(ack_for(&text).into())).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The sink's routes.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|ws: WebSocketUpgrade| async { ws.read_buffer_size(16 * 1024).on_upgrade(session) }),
        )
        .route(
            "/metrics",
            post(|| async { (StatusCode::ACCEPTED, r#"{"status":"accepted"}"#) }),
        )
}

/// Serves the sink on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_echo_seq_and_count_batches() {
        assert_eq!(
            ack_for(r#"{"type":"metric","serverId":"a","seq":17}"#),
            r#"{"type":"metric.ack","serverId":"sink","seq":17}"#
        );
        assert_eq!(
            ack_for(r#"{"type":"metric","serverId":"a"}"#),
            r#"{"type":"metric.ack","serverId":"sink"}"#
        );
        assert_eq!(
            ack_for(r#"{"type":"metrics","items":[{"serverId":"a"},{"serverId":"b"}]}"#),
            r#"{"type":"metrics.ack","accepted":2}"#
        );
    }
}
