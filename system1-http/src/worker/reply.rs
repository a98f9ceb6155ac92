//! Stream replies read as one [`redis::Value`] and walked, borrowing: no map and no copies per entry.

use redis::Value;

/// One stream entry as Redis sent it, borrowed from the reply: no map and no copies per entry (the
/// typed `StreamReadReply` of redis-rs builds a `HashMap<String, Value>` for each).
pub(super) struct Entry<'a> {
    /// The entry id, `<ms>-<seq>`.
    pub(super) id: &'a str,
    /// Field names and values, alternating; empty when the entry was trimmed since it was read.
    pub(super) fields: &'a [Value],
}

impl<'a> Entry<'a> {
    /// The fields whose name and value are strings, as `(name, value)`.
    pub(super) fn field_pairs(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        self.fields.chunks_exact(2).filter_map(|pair| match pair {
            [Value::BulkString(name), Value::BulkString(value)] => {
                Some((std::str::from_utf8(name).ok()?, value.as_slice()))
            }
            _ => None,
        })
    }
}

/// What an unexpected reply shape is called in errors.
fn bad_reply(what: &str) -> anyhow::Error {
    anyhow::anyhow!("unexpected {what} reply from Redis")
}

fn as_str(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A list of entries `[[id, [field, value, …] | nil], …]`, as XREADGROUP, XAUTOCLAIM and XRANGE send
/// them.
pub(super) fn entry_list(value: &Value) -> anyhow::Result<Vec<Entry<'_>>> {
    let Value::Array(items) = value else {
        return Err(bad_reply("stream entries"));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Array(pair) if pair.len() == 2 => Ok(Entry {
                id: as_str(&pair[0]).ok_or_else(|| bad_reply("stream entry id"))?,
                fields: match &pair[1] {
                    Value::Array(fields) => fields,
                    _ => &[],
                },
            }),
            _ => Err(bad_reply("stream entry")),
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply over several streams, per stream: `nil` (nothing within the
/// block time), or `[[stream, entries], …]` (RESP2), or `{stream: entries, …}` (RESP3). Streams with
/// nothing are left out (or come with no entries).
pub(super) fn read_reply_streams(reply: &Value) -> anyhow::Result<Vec<(&str, Vec<Entry<'_>>)>> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => streams
            .iter()
            .map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => Ok((
                    as_str(&pair[0]).ok_or_else(|| bad_reply("XREADGROUP stream name"))?,
                    entry_list(&pair[1])?,
                )),
                _ => Err(bad_reply("XREADGROUP")),
            })
            .collect(),
        Value::Map(streams) => streams
            .iter()
            .map(|(name, entries)| {
                Ok((
                    as_str(name).ok_or_else(|| bad_reply("XREADGROUP stream name"))?,
                    entry_list(entries)?,
                ))
            })
            .collect(),
        _ => Err(bad_reply("XREADGROUP")),
    }
}

/// An `XAUTOCLAIM … JUSTID` reply `[next id, [ids], [deleted ids]]`: the cursor to go on from
/// (`0-0` when the pending list was walked to its end), the ids claimed, and how many pending entries
/// were found deleted from the stream (trimmed; Redis drops them from the pending list itself).
pub(super) fn autoclaim_ids(reply: &Value) -> anyhow::Result<(String, Vec<String>, usize)> {
    let Value::Array(parts) = reply else {
        return Err(bad_reply("XAUTOCLAIM"));
    };
    let next = parts
        .first()
        .and_then(as_str)
        .ok_or_else(|| bad_reply("XAUTOCLAIM cursor"))?;
    let ids = match parts.get(1) {
        Some(Value::Array(ids)) => ids.iter().filter_map(as_str).map(str::to_owned).collect(),
        _ => return Err(bad_reply("XAUTOCLAIM")),
    };
    let deleted = match parts.get(2) {
        Some(Value::Array(ids)) => ids.len(),
        _ => 0,
    };
    Ok((next.to_owned(), ids, deleted))
}

/// The `last-delivered-id` of `group` in an `XINFO GROUPS` reply (a list of field/value lists, or of
/// maps in RESP3): everything up to it was delivered to some consumer.
pub(super) fn last_delivered_id(reply: &Value, group: &str) -> anyhow::Result<Option<String>> {
    let Value::Array(groups) = reply else {
        return Err(bad_reply("XINFO GROUPS"));
    };
    for info in groups {
        let pairs: Vec<(&Value, &Value)> = match info {
            Value::Array(flat) => flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => return Err(bad_reply("XINFO GROUPS")),
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| as_str(k) == Some(name))
                .and_then(|(_, v)| as_str(v))
        };
        if field("name") == Some(group) {
            return Ok(field("last-delivered-id").map(str::to_owned));
        }
    }
    Ok(None)
}

/// The claimed entries of an `XAUTOCLAIM` reply `[next id, entries, deleted ids]`, and how many
/// pending entries it found deleted from the stream (Redis 7; `nil` when no claim was attempted).
pub(super) fn autoclaim_reply_entries(reply: &Value) -> anyhow::Result<(Vec<Entry<'_>>, usize)> {
    match reply {
        Value::Nil => Ok((Vec::new(), 0)),
        Value::Array(parts) if parts.len() >= 2 => {
            let deleted = match parts.get(2) {
                Some(Value::Array(ids)) => ids.len(),
                _ => 0,
            };
            Ok((entry_list(&parts[1])?, deleted))
        }
        _ => Err(bad_reply("XAUTOCLAIM")),
    }
}
