//! The state store: System 1's Redis schema — every key, field, script and channel — in one place.
//!
//! System 1 is two halves: processes that compute (the API, the workers, the broadcaster) and the state
//! store they share. None of the processes talk to each other; they agree only on what this module
//! says is in Redis. Reading it is reading the contract between them:
//!
//! | what | key (defaults) | written by | read by |
//! | --- | --- | --- | --- |
//! | the metrics stream, in partitions | [`Partitions::stream`]: `metrics:stream:{p0}` … `metrics:stream:{p7}` (`--stream-key`, `--partitions`; a server's partition is [`Partitions::of`] its id), entries `serverId timestamp metrics [seq]` ([`lab_core::wire::system1::field`]) | the API ([`INGEST_SCRIPT`]) | the partition's owner (`XREADGROUP`, consumer group `--group`) |
//! | who owns a partition | [`Partitions::lease`]: `metrics:stream:{p3}:owner:<group>`, the owner's consumer name, with a time to live (`--lease-ms`) | the workers ([`RENEW_SCRIPT`], [`COMMIT_SCRIPT`]) | the workers |
//! | the group's live workers | [`Partitions::members`]: `metrics:stream:members:<group>`, a sorted set (score: when each one's heartbeat lapses) | the workers ([`HEARTBEAT_SCRIPT`]) | the workers (their fair share of partitions) |
//! | what trimming dropped | [`trimmed_key`] of each partition: `metrics:stream:{p3}:trimmed`, fields [`unread_field`] and [`pending_field`] | the API (unread) and the workers (pending) | the workers' ops port |
//! | a server's latest snapshot | [`latest_key`]: `metrics:latest:<id>`, a hash with the fields [`latest`] | the owner of its partition ([`COMMIT_SCRIPT`]) | the broadcaster (`snapshot.request`) |
//! | `metric.processed` events | `metrics:processed` (`--processed-stream`), entries [`processed::N`] and [`processed::EVENT`]; its count [`processed_count_key`] | the workers ([`COMMIT_SCRIPT`]) | the broadcaster (`XREAD`) |
//! | events, at most once | the channel `metrics:pubsub` (`--channel`): `metric.ingested` and `metric.processed` | the API and the workers | the broadcaster (`SUBSCRIBE`) |
//!
//! The names are the original's where it had them (`metrics:stream`, `metrics:pubsub`,
//! `metrics:latest:<id>`); with `--partitions 1` the stream is the original's single `metrics:stream`,
//! so its tools keep working against our Redis.
//!
//! **Where the windows are not.** No window state is in Redis: each partition has one owner at a
//! time, which holds its servers' windows in memory (see [`crate::worker`]). What Redis holds is
//! enough to rebuild them exactly: the partition's recent entries, and the group's record of which of
//! them were processed (everything up to its `last-delivered-id`, less what is pending).
//!
//! **Why the `{p3}` in the keys.** Redis Cluster puts a key in a hash slot by the part between braces,
//! when there is one: every key of partition 3 (its stream, its lease, its trimmed counts) is in one
//! slot, so the ingest script and the lease check, which touch several of them at once, keep working
//! when the partitions are spread over a cluster's nodes. (The snapshots and the `processed` stream are
//! not yet tagged: on a cluster, [`COMMIT_SCRIPT`] would need them in the partition's slot too; see
//! docs/performance.md.)

/// The default stream metrics are appended to (the original's name).
pub const DEFAULT_STREAM: &str = "metrics:stream";

/// The default pub/sub channel of `metric.ingested` and `metric.processed` events (the original's).
pub const DEFAULT_CHANNEL: &str = "metrics:pubsub";

/// The default capped stream of `metric.processed` events (ours: see [`crate::broadcaster`]).
pub const DEFAULT_PROCESSED_STREAM: &str = "metrics:processed";

/// The default number of partitions (`--partitions`): a few per worker of a typical deployment (two
/// processes of two workers), so that a worker that joins or leaves moves a small share of the servers.
pub const DEFAULT_PARTITIONS: u16 = 8;

/// How the stream is cut into partitions, by server: which partition a server's metrics go to, and
/// the keys of each partition. The API and every worker must agree on it (the same `--stream-key` and
/// `--partitions`), or metrics would go where no worker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    stream: String,
    count: u16,
}

impl Partitions {
    /// `count` partitions (at least 1) of the stream `stream`.
    pub fn new(stream: &str, count: u16) -> Partitions {
        Partitions {
            stream: stream.to_owned(),
            count: count.max(1),
        }
    }

    /// How many partitions there are.
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The partition of server `server_id`: the 32-bit FNV-1a hash of its id's bytes, modulo the
    /// count. Stable (the same id, the same partition, in every process and version, and easy to
    /// compute in any language: see docs/protocol-decisions.md), and spreads ids like `web-1`, `web-2`
    /// evenly. Every metric of a server goes to one partition, so one worker sees them all, in order.
    pub fn of(&self, server_id: &str) -> usize {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in server_id.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        (hash % u32::from(self.count)) as usize
    }

    /// The stream of partition `p`: `<stream>:{p<p>}` (the braces are a Redis Cluster hash tag), or the
    /// stream itself when there is only one partition.
    pub fn stream(&self, p: usize) -> String {
        if self.count == 1 {
            self.stream.clone()
        } else {
            format!("{}:{{p{p}}}", self.stream)
        }
    }

    /// Every partition's stream, in order.
    pub fn streams(&self) -> Vec<String> {
        (0..self.count()).map(|p| self.stream(p)).collect()
    }

    /// The lease of partition `p` in consumer group `group`: the name of the worker that owns it, which
    /// expires unless renewed.
    pub fn lease(&self, p: usize, group: &str) -> String {
        format!("{}:owner:{group}", self.stream(p))
    }

    /// The sorted set of the group's live workers (see [`HEARTBEAT_SCRIPT`]).
    pub fn members(&self, group: &str) -> String {
        format!("{}:members:{group}", self.stream)
    }

    /// Each partition's cap when the whole stream may hold `maxlen` entries (`--stream-maxlen`).
    pub fn maxlen_each(&self, maxlen: u64) -> u64 {
        maxlen.div_ceil(u64::from(self.count)).max(1)
    }
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

/// The Redis hash that counts a stream's (a partition's) entries trimmed before a worker of a group processed them, per
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

/// The fields of an entry of the `processed` stream ([`COMMIT_SCRIPT`]).
pub mod processed {
    /// The event's number: 1, 2, 3, … over the stream's life, so that a reader tells a gap and its size.
    pub const N: &str = "n";
    /// The `metric.processed` event's JSON, verbatim what dashboards receive.
    pub const EVENT: &str = "event";
}

/// Entries the stream may grow past `--stream-maxlen` before it is trimmed back to it. Trimming in steps
/// (as `MAXLEN ~` does with Redis's 100-entry nodes) makes its cost per metric small and constant.
pub const TRIM_STEP: u64 = 100;

/// Appends metrics to their partitions and announces them, atomically; then trims each partition it
/// appended to that is [`TRIM_STEP`] entries over its cap, counting what that drops unread.
///
/// KEYS: for each partition the call appends to, its stream and its trimmed-entries hash
/// ([`trimmed_key`]), in pairs. ARGV: each partition's cap, channel, count, trim step, then six values
/// per metric: the number of its partition's pair in KEYS (1, 2, …), serverId, timestamp, metrics
/// JSON, seq ('' for none), the metric's JSON. Returns the entry ids, in order. One call carries
/// the metrics of many requests (the API's group commit, [`crate::api`]) to every partition they
/// go to: the script does not know or care where each metric came from.
///
/// **One call, many partitions.** Each call has a fixed cost (looking the script up, setting up Lua,
/// an `XLEN` per partition for trimming); one call per partition would pay it up to eight times per
/// group. On a Redis Cluster a script may only touch keys of one hash slot: there, the API would make
/// one call per partition (or per node), which the keys' `{pN}` tags already allow.
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
  local a = 5 + m * 6
  local stream = KEYS[tonumber(ARGV[a]) * 2 - 1]
  local id
  if ARGV[a + 4] == '' then
    id = redis.call('XADD', stream, '*',
      'serverId', ARGV[a + 1], 'timestamp', ARGV[a + 2], 'metrics', ARGV[a + 3])
  else
    id = redis.call('XADD', stream, '*',
      'serverId', ARGV[a + 1], 'timestamp', ARGV[a + 2], 'metrics', ARGV[a + 3], 'seq', ARGV[a + 4])
  end
  redis.call('PUBLISH', channel, '{"type":"metric.ingested","entryId":"' .. id .. '","payload":' .. ARGV[a + 5] .. '}')
  ids[m + 1] = id
end
-- Stream ids are "<ms>-<seq>": compare them as two numbers.
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function newer(ams, aseq, bms, bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end
for k = 1, #KEYS, 2 do
  local stream, trimmed = KEYS[k], KEYS[k + 1]
  local length = redis.call('XLEN', stream)
  if length >= maxlen + step then
    local excess = length - maxlen
    local doomed = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
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
      if unread > 0 then redis.call('HINCRBY', trimmed, 'unread:' .. name, unread) end
    end
    redis.call('XTRIM', stream, 'MAXLEN', maxlen)
  end
end
return ids
"#;

/// Commits a partition's batch, atomically, if and only if the worker still owns the partition: stores
/// each server's snapshot, announces every `metric.processed` event, acks the entries, counts what was
/// found trimmed; and renews the lease.
///
/// KEYS: the lease ([`Partitions::lease`]), the partition's stream, its trimmed counts
/// ([`trimmed_key`]), the `processed` stream, its count ([`processed_count_key`]), then one snapshot
/// hash ([`latest_key`]) per server of the batch. ARGV: the worker's name, the lease in ms, the group,
/// the channel, the `processed` stream's cap, the number of entries found trimmed, the number of ids
/// to ack (a), the number of events (e); then the a ids, the e events, and six values per snapshot:
/// the fields of [`latest`], in their order. Returns the number of events, or the error `LEASE` (and
/// writes nothing) when the lease is another worker's or gone.
///
/// **Why one script.** Everything the batch changes is changed together or not at all: an event is
/// in the `processed` stream if and only if its entry was acked, and a snapshot never runs ahead of
/// its announcements. The lease check in the same script is the *fence*: a worker that stalled past
/// its lease (a long pause, a lost connection) and wakes up to commit finds another owner, and
/// writes nothing; the new owner, which rebuilt the windows from the stream, is the only one whose
/// writes count. Each event is numbered ([`processed::N`]) from the count of events ever appended, so
/// that the broadcaster tells a gap and its exact size (see [`crate::broadcaster`]).
pub const COMMIT_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE this worker no longer owns the partition')
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local group, channel, cap = ARGV[3], ARGV[4], ARGV[5]
local trimmed, acks, events = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local at = 9
-- (unpack has a limit on its arguments: ack in chunks.)
local i = 0
while i < acks do
  local last = math.min(i + 1000, acks)
  redis.call('XACK', KEYS[2], group, unpack(ARGV, at + i, at + last - 1))
  i = last
end
at = at + acks
if events > 0 then
  local n = redis.call('INCRBY', KEYS[5], events) - events
  for e = 0, events - 1 do
    redis.call('PUBLISH', channel, ARGV[at + e])
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*', 'n', n + e + 1, 'event', ARGV[at + e])
  end
end
at = at + events
for k = 6, #KEYS do
  redis.call('HSET', KEYS[k], 'serverId', ARGV[at], 'timestamp', ARGV[at + 1], 'metrics', ARGV[at + 2],
    'seq', ARGV[at + 3], 'entryId', ARGV[at + 4], 'windows', ARGV[at + 5])
  at = at + 6
end
if trimmed > 0 then redis.call('HINCRBY', KEYS[3], 'pending:' .. group, trimmed) end
return events
"#;

/// Renews a lease (`KEYS[1]`) for `ARGV[2]` ms if worker `ARGV[1]` holds it: 1, else 0 (lost).
pub const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Gives a lease (`KEYS[1]`) back if worker `ARGV[1]` holds it, so that another takes the partition at
/// once instead of after the lease lapses: 1, else 0.
pub const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Worker `ARGV[1]` says it is alive for `ARGV[2]` more ms, in the group's set of members (`KEYS[1]`,
/// [`Partitions::members`]); members whose time ran out are removed. Returns the number of live
/// members: each worker's fair share of the partitions is the count divided by it, rounded up. Redis's
/// own clock (`TIME`) scores everyone, so the workers' clocks need not agree.
pub const HEARTBEAT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"#;

/// Takes worker `ARGV[1]` out of the group's members (`KEYS[1]`) at once (a graceful stop).
pub const LEAVE_SCRIPT: &str = r#"
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The ingest script writes each `metric.ingested` event by concatenation, in Lua: its fixed
    /// parts must be lab-core's, which are held equal to the protocol's typed form there.
    #[test]
    fn the_ingest_script_spells_the_protocols_ingested_event() {
        use lab_core::wire::system1::{INGESTED_PAYLOAD_KEY, INGESTED_PREFIX};
        let lua = format!("'{INGESTED_PREFIX}' .. id .. '{INGESTED_PAYLOAD_KEY}' .. ARGV[a + 5] .. '}}'");
        assert!(INGEST_SCRIPT.contains(&lua), "{lua}");
    }

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
            assert!(COMMIT_SCRIPT.contains(&format!("'{field}'")), "{field}");
        }
        for field in [
            latest::SERVER_ID,
            latest::TIMESTAMP,
            latest::METRICS,
            latest::SEQ,
            latest::ENTRY_ID,
            latest::WINDOWS,
        ] {
            assert!(COMMIT_SCRIPT.contains(&format!("'{field}'")), "{field}");
        }
        assert!(COMMIT_SCRIPT.contains("'pending:' .. group"));
        assert_eq!(pending_field("g"), "pending:g");
    }

    #[test]
    fn partitions_are_stable_and_tagged_for_a_cluster() {
        let p = Partitions::new("metrics:stream", 8);
        assert_eq!(p.stream(3), "metrics:stream:{p3}");
        assert_eq!(p.lease(3, "g"), "metrics:stream:{p3}:owner:g");
        assert_eq!(trimmed_key(&p.stream(3)), "metrics:stream:{p3}:trimmed");
        // FNV-1a 32 of "a" is 0xe40c292c (its published test vector): 3826002220 % 8 = 4.
        assert_eq!(p.of("a"), 0xe40c_292c_u32 as usize % 8);
        assert_eq!(p.of(""), 0x811c_9dc5_u32 as usize % 8);
        // Servers like web-1 … web-64 spread over every partition, none with more than twice its share.
        let mut counts = [0; 8];
        for i in 1..=64 {
            counts[p.of(&format!("web-{i}"))] += 1;
        }
        assert!(counts.iter().all(|&c| (1..=16).contains(&c)), "{counts:?}");
        let one = Partitions::new("metrics:stream", 1);
        assert_eq!((one.stream(0), one.of("anything")), ("metrics:stream".into(), 0));
        assert_eq!(p.maxlen_each(1_000_000), 125_000);
        assert_eq!(Partitions::new("s", 3).maxlen_each(10), 4);
    }
}
