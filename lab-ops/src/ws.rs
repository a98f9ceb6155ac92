//! What both systems' WebSocket servers share on axum's side: [`Socket`], axum's WebSocket as the
//! message stream and sink of [`lab_core::delivery`]'s loop; [`Outbox`], a dashboard's outbox of
//! axum's frames; and [`count_push`], what each push into one is counted as.
//!
//! The mapping is written once so that both systems close for the same reasons: a text message that is
//! not UTF-8 is 1007, one over the size limit 1009, a frame that breaks the protocol 1002 (RFC 6455
//! §7.4.1). tungstenite keeps its write side open after these errors, so the close frame can still be
//! sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{self, CloseFrame, Utf8Bytes, WebSocket};
use futures_util::{Sink, Stream};
use lab_core::delivery::{Message, ReadError};
use lab_core::outbox::Pushed;
use lab_core::wire::close::CloseReason;
use prometheus_client::metrics::counter::Counter;

/// A dashboard's outbox ([`lab_core::outbox`]) of WebSocket text frames, shared by reference count:
/// one update sent to a hundred dashboards copies no bytes.
pub type Outbox = lab_core::outbox::Outbox<Utf8Bytes>;

/// Counts what a push into a dashboard's outbox did: it superseded an older update (`coalesced`), or
/// found no room and was dropped (`dropped`). Both systems count these two outcomes of every push, each
/// under its own metric names.
pub fn count_push(pushed: Pushed, coalesced: &Counter, dropped: &Counter) {
    match pushed {
        Pushed::Queued | Pushed::Kept => {}
        Pushed::Coalesced => {
            coalesced.inc();
        }
        Pushed::Dropped => {
            dropped.inc();
        }
    }
}

/// An upgraded axum WebSocket, speaking [`lab_core::delivery::Message`]s.
#[derive(Debug)]
pub struct Socket(pub WebSocket);

impl Stream for Socket {
    type Item = Result<Message<Utf8Bytes>, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|next| {
            next.map(|read| {
                read.map(|message| match message {
                    ws::Message::Text(text) => Message::Text(text),
                    ws::Message::Binary(bytes) => Message::Binary(bytes.to_vec()),
                    ws::Message::Ping(_) => Message::Ping,
                    ws::Message::Pong(_) => Message::Pong,
                    ws::Message::Close(_) => Message::Close(None),
                })
                .map_err(|error| match refusal(&error) {
                    Some(reason) => ReadError::Refused(reason),
                    None => {
                        tracing::debug!(%error, "connection error");
                        ReadError::Broken
                    }
                })
            })
        })
    }
}

impl Sink<Message<Utf8Bytes>> for Socket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message<Utf8Bytes>) -> Result<(), Self::Error> {
        let message = match message {
            Message::Text(text) => ws::Message::Text(text),
            Message::Binary(bytes) => ws::Message::Binary(bytes.into()),
            Message::Ping => ws::Message::Ping(Default::default()),
            Message::Pong => ws::Message::Pong(Default::default()),
            Message::Close(reason) => ws::Message::Close(reason.map(|reason| CloseFrame {
                code: reason.code(),
                reason: Utf8Bytes::from_static(reason.text()),
            })),
        };
        Pin::new(&mut self.0).start_send(message)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// The close reason for a read error the client caused, if any; other errors (the connection broke or
/// was reset) leave nobody to say it to.
fn refusal(error: &axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let inner = std::error::Error::source(error).and_then(|e| e.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(_)) => Some(CloseReason::TooBig),
        Some(WsError::Utf8(_)) => Some(CloseReason::InvalidUtf8),
        Some(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        )) => None,
        Some(WsError::Protocol(_)) => Some(CloseReason::ProtocolViolation),
        _ => None,
    }
}
