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

/// A list of entries `[[id, [field, value, …] | nil], …]`, as XREADGROUP and XAUTOCLAIM send them.
fn entry_list(value: &Value) -> anyhow::Result<Vec<Entry<'_>>> {
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

/// The entries of an `XREADGROUP` reply for one stream: `nil` (nothing within the block time), or
/// `[[stream, entries]]` (RESP2), or `{stream: entries}` (RESP3).
pub(super) fn read_reply_entries(reply: &Value) -> anyhow::Result<Vec<Entry<'_>>> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(stream)) if stream.len() == 2 => entry_list(&stream[1]),
            Some(_) => Err(bad_reply("XREADGROUP")),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => entry_list(entries),
        },
        _ => Err(bad_reply("XREADGROUP")),
    }
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
