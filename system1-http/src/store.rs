//! The state store: System 1's Redis schema — every key, field, script and channel — in one place.
//!
//! System 1 is two halves: processes that compute (the API, the workers, the broadcaster) and the state
//! store they share. None of the processes talk to each other; they agree only on what this module
//! says is in Redis. Reading it is reading the contract between them:
//!
//! | what | key (defaults) | written by | read by |
//! | --- | --- | --- | --- |
//! | the metrics stream | `metrics:stream` (`--stream-key`), entries `serverId timestamp metrics [seq]` ([`lab_core::wire::system1::field`]) | the API ([`INGEST_SCRIPT`]) | the workers (`XREADGROUP`, consumer group `--group`) |
//! | what trimming dropped | [`trimmed_key`]: `metrics:stream:trimmed`, fields [`unread_field`] and [`pending_field`] | the API (unread) and the workers (pending) | the workers' ops port |
//! | a server's recent samples | [`samples_key`]: `metrics:samples:<id>`, a sorted set (score: timestamp; member: identity and values) | the workers | the workers |
//! | its version | [`version_key`]: `metrics:samples-version:<id>`, incremented per write | the workers | the workers (cache check) |
//! | its latest snapshot | [`latest_key`]: `metrics:latest:<id>`, a hash with the fields [`latest`] | the workers | the broadcaster (`snapshot.request`) |
//! | `metric.processed` events | `metrics:processed` (`--processed-stream`), entries [`processed::N`] and [`processed::EVENT`]; its count [`processed_count_key`] | the workers ([`ANNOUNCE_SCRIPT`]) | the broadcaster (`XREAD`) |
//! | events, at most once | the channel `metrics:pubsub` (`--channel`): `metric.ingested` and `metric.processed` | the API and the workers | the broadcaster (`SUBSCRIBE`) |
//!
//! The names are the original's where it had them (`metrics:stream`, `metrics:pubsub`,
//! `metrics:latest:<id>`), so its tools keep working against our Redis.

/// The default stream metrics are appended to (the original's name).
pub const DEFAULT_STREAM: &str = "metrics:stream";

/// The default pub/sub channel of `metric.ingested` and `metric.processed` events (the original's).
pub const DEFAULT_CHANNEL: &str = "metrics:pubsub";

/// The default capped stream of `metric.processed` events (ours: see [`crate::broadcaster`]).
pub const DEFAULT_PROCESSED_STREAM: &str = "metrics:processed";

/// The Redis key of a server's recent samples.
pub fn samples_key(server_id: &str) -> String {
    format!("metrics:samples:{server_id}")
}

/// The Redis key of a server's sample-set version: incremented with every write to its samples, so that a
/// worker can tell whether its cached windows are still the truth.
pub fn version_key(server_id: &str) -> String {
    format!("metrics:samples-version:{server_id}")
}

/// The Redis key of a server's latest snapshot (the original's name); its fields are [`latest`].
pub fn latest_key(server_id: &str) -> String {
    format!("metrics:latest:{server_id}")
}

/// The fields of a server's latest-snapshot hash ([`latest_key`]), written by the worker that processed
/// its last metric, read by the broadcaster to answer `snapshot.request`.
pub mod latest {
    /// The server's id.
    pub const SERVER_ID: &str = "serverId";
    /// The last metric's timestamp (ms since the epoch, as a decimal number).
    pub const TIMESTAMP: &str = "timestamp";
    /// The last metric's readings, as JSON.
    pub const METRICS: &str = "metrics";
    /// The last metric's `seq`, or empty.
    pub const SEQ: &str = "seq";
    /// The stream entry the last metric came from.
    pub const ENTRY_ID: &str = "entryId";
    /// The windows after the last metric, as JSON ([`lab_core::aggregate::WindowSummaries`]).
    pub const WINDOWS: &str = "windows";
}

/// The Redis hash that counts stream entries trimmed before a worker of a group processed them, per
/// group: field [`unread_field`] (trimmed before any consumer read them; counted by the API's ingest
/// script, which trims) and [`pending_field`] (read by a consumer that never acknowledged them; counted
/// by the worker that finds them gone). Kept in Redis so that every process of the group, and every
/// restart, adds to the same totals.
pub fn trimmed_key(stream: &str) -> String {
    format!("{stream}:trimmed")
}

/// The field of [`trimmed_key`] counting entries trimmed before any consumer of `group` read them.
/// ([`INGEST_SCRIPT`] writes the same name, `'unread:' .. group`, in Lua.)
pub fn unread_field(group: &str) -> String {
    format!("unread:{group}")
}

/// The field of [`trimmed_key`] counting entries of `group` trimmed while read but not acknowledged.
pub fn pending_field(group: &str) -> String {
    format!("pending:{group}")
}

/// The key counting the events ever appended to the `processed` stream `stream`.
pub fn processed_count_key(stream: &str) -> String {
    format!("{stream}:count")
}

/// The fields of an entry of the `processed` stream ([`ANNOUNCE_SCRIPT`]).
pub mod processed {
    /// The event's number: 1, 2, 3, … over the stream's life, so that a reader tells a gap and its size.
    pub const N: &str = "n";
    /// The `metric.processed` event's JSON, verbatim what dashboards receive.
    pub const EVENT: &str = "event";
}

/// Entries the stream may grow past `--stream-maxlen` before it is trimmed back to it. Trimming in steps
/// (as `MAXLEN ~` does with Redis's 100-entry nodes) makes its cost per metric small and constant.
pub const TRIM_STEP: u64 = 100;

/// Appends metrics and announces them, atomically; then trims the stream if it is [`TRIM_STEP`]
/// entries over its cap, counting what that drops unread.
///
/// KEYS: the stream, the trimmed-entries hash ([`trimmed_key`]). ARGV: maxlen, channel, count, trim
/// step, then five values per metric: serverId, timestamp, metrics JSON, seq ('' for none), the metric's
/// JSON. Returns the entry ids, in order. One call may carry the metrics of many requests (the API's
/// group commit, [`crate::api`]): the script does not know or care where each metric came from.
///
/// **Why the script trims, rather than `XADD … MAXLEN ~`.** Trimming deletes the oldest entries whether
/// or not a worker has processed them. To count the ones no worker has even read, we must know which
/// entries go: so the script reads the ids of the oldest entries it is about to trim, compares them
/// with each consumer group's `last-delivered-id` (anything newer was never delivered), adds the count
/// to the hash (field [`unread_field`]), and trims exactly those. Entries that were delivered but not
/// yet acknowledged are counted by the workers when they find them gone (see [`crate::worker`]): their
/// consumer may still finish them. Redis's own `lag` cannot be used for this: after a trim, Redis 7.0
/// inflates it for good, and newer versions silently forget the gap.
pub const INGEST_SCRIPT: &str = r#"
local maxlen, channel, n, step = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = {}
for m = 0, n - 1 do
  local a = 5 + m * 5
  local id
  if ARGV[a + 3] == '' then
    id = redis.call('XADD', KEYS[1], '*',
      'serverId', ARGV[a], 'timestamp', ARGV[a + 1], 'metrics', ARGV[a + 2])
  else
    id = redis.call('XADD', KEYS[1], '*',
      'serverId', ARGV[a], 'timestamp', ARGV[a + 1], 'metrics', ARGV[a + 2], 'seq', ARGV[a + 3])
  end
  redis.call('PUBLISH', channel, '{"type":"metric.ingested","entryId":"' .. id .. '","payload":' .. ARGV[a + 4] .. '}')
  ids[m + 1] = id
end
local length = redis.call('XLEN', KEYS[1])
if length >= maxlen + step then
  local excess = length - maxlen
  -- Stream ids are "<ms>-<seq>": compare them as two numbers.
  local function parse(id)
    local dash = string.find(id, '-', 1, true)
    return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
  end
  local function newer(ams, aseq, bms, bseq)
    return ams > bms or (ams == bms and aseq > bseq)
  end
  local doomed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] end
      if group[i] == 'last-delivered-id' then last = group[i + 1] end
    end
    local lms, lseq = parse(last)
    local unread = 0
    for _, entry in ipairs(doomed) do
      local ems, eseq = parse(entry[1])
      if newer(ems, eseq, lms, lseq) then unread = unread + 1 end
    end
    if unread > 0 then redis.call('HINCRBY', KEYS[2], 'unread:' .. name, unread) end
  end
  redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
end
return ids
"#;

/// Announces a batch's `metric.processed` events (ARGV[3…]) in one command of the batch's
/// transaction: each is published on the channel `ARGV[1]` and appended to the capped `processed`
/// stream `KEYS[1]` (about `ARGV[2]` entries, `MAXLEN ~`) with its number [`processed::N`] in the count
/// `KEYS[2]` ([`processed_count_key`]) of events ever appended. In the same `MULTI` as the batch's
/// `XACK`, so an event is in the stream if and only if its entry was processed; the broadcaster tells
/// a gap (events trimmed before it read them) and its exact size from the numbers (see
/// [`crate::broadcaster`]).
pub const ANNOUNCE_SCRIPT: &str = r#"
local count = #ARGV - 2
local last = redis.call('INCRBY', KEYS[2], count)
for i = 3, #ARGV do
  redis.call('PUBLISH', ARGV[1], ARGV[i])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'n', last - count + i - 2, 'event', ARGV[i])
end
return count
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lua scripts spell some names themselves: they must be the ones this module gives.
    #[test]
    fn the_scripts_use_the_schemas_names() {
        assert!(INGEST_SCRIPT.contains("'unread:' .. name"));
        assert_eq!(unread_field("g"), "unread:g");
        use lab_core::wire::system1::field;
        for field in [field::SERVER_ID, field::TIMESTAMP, field::METRICS, field::SEQ] {
            assert!(INGEST_SCRIPT.contains(&format!("'{field}'")), "{field}");
        }
        for field in [processed::N, processed::EVENT] {
            assert!(ANNOUNCE_SCRIPT.contains(&format!("'{field}'")), "{field}");
        }
    }
}
