//! Why a server closes a WebSocket: every close code and reason text of the lab, in one place, so that
//! System 1's broadcaster and System 2 close for the same causes in the same words
//! (`docs/protocol-decisions.md` has the table).

/// Why the server closed a connection: each reason has its close code and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down (Ctrl-C, SIGTERM).
    Shutdown,
    /// More connections than `--max-connections`.
    ConnectionLimit,
    /// A message larger than `--max-message-bytes`.
    TooBig,
    /// More messages per second than `--max-messages-per-sec`, sustained.
    RateLimit,
    /// Authentication is on and the first message was not a `register` with a token.
    AuthRequired,
    /// The token given (URL or `register`) is wrong.
    BadToken,
    /// A dashboard stayed backed up past `--slow-dashboard-ms`.
    SlowDashboard,
    /// Writing to the peer blocked past `--slow-dashboard-ms`: it is not reading.
    WriteStalled,
    /// Nothing heard from the peer, not even a pong, for a whole ping interval.
    Heartbeat,
    /// A text message that is not valid UTF-8 (RFC 6455 §8.1: the endpoint must fail the connection,
    /// and 1007 says why: "data within a message that was not consistent with the type of the message").
    InvalidUtf8,
    /// A frame that breaks the WebSocket protocol itself: reserved bits set, an unknown opcode, an
    /// unmasked client frame, a fragmented or oversize control frame, a stray continuation.
    ProtocolViolation,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 §7.4; 4000 is ours).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => 1001,
            CloseReason::ProtocolViolation => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::TooBig => 1009,
            CloseReason::ConnectionLimit => 1013,
            CloseReason::Heartbeat => 4000,
            CloseReason::RateLimit
            | CloseReason::AuthRequired
            | CloseReason::BadToken
            | CloseReason::SlowDashboard
            | CloseReason::WriteStalled => 1008,
        }
    }

    /// The close reason text (at most 123 bytes, as the protocol requires).
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "server shutting down",
            CloseReason::ConnectionLimit => "server at its connection limit; try again later",
            CloseReason::TooBig => "message too big",
            CloseReason::RateLimit => "message rate limit exceeded",
            CloseReason::AuthRequired => "authentication required: send register with a token first",
            CloseReason::BadToken => "invalid token",
            CloseReason::SlowDashboard => "dashboard too slow: updates backed up past the limit",
            CloseReason::WriteStalled => "client not reading: writes blocked past the limit",
            CloseReason::Heartbeat => "heartbeat timeout: no pong",
            CloseReason::InvalidUtf8 => "invalid UTF-8 in a text message",
            CloseReason::ProtocolViolation => "WebSocket protocol violation",
        }
    }

    /// The label in `system2_connections_closed_total{reason=…}`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::ConnectionLimit => "connection_limit",
            CloseReason::TooBig => "too_big",
            CloseReason::RateLimit => "rate_limit",
            CloseReason::AuthRequired => "auth_required",
            CloseReason::BadToken => "bad_token",
            CloseReason::SlowDashboard => "slow_dashboard",
            CloseReason::WriteStalled => "write_stalled",
            CloseReason::Heartbeat => "heartbeat",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::ProtocolViolation => "protocol_violation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_1007_with_a_reason_and_a_label() {
        let reason = CloseReason::InvalidUtf8;
        assert_eq!(reason.code(), 1007);
        assert!(!reason.text().is_empty() && reason.text().len() <= 123);
        assert_eq!(reason.label(), "invalid_utf8");
    }
}
