//! Every bound the protocol enforces, in one place.
//!
//! A server that accepts input from the network must decide, for every field, how much it is willing
//! to take. These constants are those decisions. Each one is reported back to the client in the error
//! message when it is exceeded, so a user never has to guess which limit they hit.

/// Largest HTTP body or WebSocket message we parse, in bytes: 256 KiB, the original lab's
/// `express.json({ limit: '256kb' })`. The size is checked *before* parsing, so an oversize
/// message costs us nothing but reading it.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest `snapshot` frame a server sends, in bytes: 16 MiB, room for every server of a full
/// server table (10 000, about 800 bytes each). A bigger one is refused with an error frame that says
/// to ask for one server: a server must never write a frame its own write buffer cannot hold, or the
/// connection dies without a word.
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// Most metrics in one batch (an HTTP array body or a System 2 `metrics` frame). A batch is
/// validated all-or-nothing, so this also bounds how much work one bad batch can cause.
/// 1 000 typical metrics are about 130 KB, comfortably under [`MAX_MESSAGE_BYTES`].
pub const MAX_BATCH_ITEMS: usize = 1_000;

/// Longest `serverId`, in bytes. Server ids become Redis keys and Prometheus labels.
pub const MAX_SERVER_ID_LEN: usize = 128;

/// Most extra (non-standard) readings inside `metrics`, beside cpu/memory/disk/network.
pub const MAX_EXTRA_READINGS: usize = 32;

/// Longest name of an extra reading, in bytes.
pub const MAX_READING_NAME_LEN: usize = 64;

/// Largest `network.in` / `network.out` value (bytes per second): a terabyte per second. Anything
/// larger is a bug in the sender, and bounding it lets the aggregator keep each value as an `i64` of
/// millionths, exactly.
pub const MAX_NETWORK_VALUE: f64 = 1e12;

/// Largest `timestamp` (epoch milliseconds): JavaScript's `Number.MAX_SAFE_INTEGER`, the largest
/// integer a Node.js client can represent exactly. It is the year 287 396.
pub const MAX_TIMESTAMP_MS: f64 = 9_007_199_254_740_991.0;

/// Longest `token` in a `register` frame, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;

/// Largest `maxHz` a dashboard may ask for. Faster than this is no longer "coalescing".
pub const MAX_DASHBOARD_HZ: u32 = 1_000;

/// How deeply JSON may nest. No valid message nests deeper than 4 (batch → metric → metrics →
/// network), so 16 is generous; serde_json's own guard (128) would also stop a stack overflow,
/// but this one answers with a clear message long before that.
pub const MAX_JSON_DEPTH: usize = 16;

/// Characters allowed in a `serverId` and in the names of extra readings, for the error message.
pub const ID_CHARSET: &str = "A-Z a-z 0-9 . _ : -";

/// Whether `b` may appear in a `serverId` (see [`ID_CHARSET`]).
pub const fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// How far ahead of the receiving server's clock a `timestamp` may be, in milliseconds (see
/// [`crate::parse::check_not_future`]). A minute absorbs any sane clock skew between hosts.
pub const MAX_FUTURE_SKEW_MS: f64 = 60_000.0;
