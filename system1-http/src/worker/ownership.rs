//! Which partitions a worker owns: heartbeats, leases, the fair share, and taking a partition over
//! (see the [module documentation](super) for why).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use lab_core::wire::system1;
use redis::Value;

use super::identity::Identity;
use super::reply::{autoclaim_ids, entry_list, last_delivered_id};
use super::{JOIN_WAIT, MAX_SERVERS_PER_WORKER, Outcome, Owned, REBUILD_SLACK_MS, ServerState, Worker};
use crate::store::trimmed_key;

/// How long a stopping worker tries to give its partitions back.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Entries read per command while claiming or replaying a partition.
const CHUNK: usize = 1_000;

impl Worker {
    /// Says this worker is alive, renews its leases, gives back what is over its fair share, takes free
    /// partitions up to it, and drops the windows of servers gone quiet.
    pub(super) async fn maintain(&mut self) -> anyhow::Result<()> {
        let joining = self.last_maintenance.is_none() && self.owned.is_empty();
        self.last_maintenance = Some(Instant::now());
        let members = self.partitions.members(&self.group);
        let mut live: usize = 0;
        for round in 0..=usize::from(joining) {
            if round > 0 {
                tokio::time::sleep(JOIN_WAIT.min(Duration::from_millis(self.lease_ms / 3))).await;
            }
            live = self
                .scripts
                .heartbeat
                .key(&members)
                .arg(&self.name)
                .arg(self.lease_ms)
                .invoke_async(&mut self.writer)
                .await
                .context("the heartbeat failed")?;
        }
        let share = self.partitions.count().div_ceil(live.max(1));
        self.share = share;

        let owned: Vec<usize> = self.owned.keys().copied().collect();
        for p in owned {
            let lease = self.owned[&p].lease.clone();
            if !self.renew(&lease).await? {
                self.owned.remove(&p);
                self.stats.leases_lost.inc();
                tracing::warn!(worker = %self.name, partition = p, "the partition's lease lapsed and another worker took it");
            }
        }
        // The group grew: give back the partitions over the share, from the highest number down. (This
        // worker has committed everything it read from them: nothing of theirs is pending with it.)
        while self.owned.len() > share {
            let Some((p, owned)) = self.owned.pop_last() else {
                break;
            };
            let _: i64 = self
                .scripts
                .release
                .key(&owned.lease)
                .arg(&self.name)
                .invoke_async(&mut self.writer)
                .await
                .context("giving a partition back failed")?;
            tracing::info!(worker = %self.name, partition = p, live, share, "gave a partition back: more workers share the group");
        }
        // Free partitions, up to the share; each worker starts looking at a place of its own, so that
        // workers starting together do not all race for partition 0.
        let count = self.partitions.count();
        let start = self.partitions.of(&self.name);
        for k in 0..count {
            if self.owned.len() >= share {
                break;
            }
            let p = (start + k) % count;
            if self.owned.contains_key(&p) {
                continue;
            }
            let lease = self.partitions.lease(p, &self.group);
            // `NX … GET` (Redis ≥ 7): set it if nobody holds it, and say who held it. Its holder may be
            // this very name: a worker restarted under a fixed `--consumer-name` before its lease
            // lapsed. The partition is then its own again, at once (renewed, and rebuilt as any
            // taken partition, since its windows died with the process).
            let holder: Option<String> = redis::cmd("SET")
                .arg(&lease)
                .arg(&self.name)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(self.lease_ms)
                .query_async(&mut self.writer)
                .await
                .context("taking a lease failed")?;
            let taken = match holder.as_deref() {
                None => true,
                Some(name) if name == self.name => self.renew(&lease).await?,
                Some(_) => false,
            };
            if taken {
                let stream = self.partitions.stream(p);
                tracing::info!(worker = %self.name, partition = p, %stream, live, share, "took a partition");
                self.stats.takeovers.inc();
                self.owned.insert(
                    p,
                    Owned {
                        trimmed: trimmed_key(&stream),
                        stream,
                        lease,
                        servers: HashMap::new(),
                        rebuild: true,
                        resume_pending: true,
                    },
                );
            }
        }
        self.forget_quiet_servers();
        Ok(())
    }

    /// Renews `lease` for another `--lease-ms` if this worker holds it ([`RENEW_SCRIPT`](crate::store::RENEW_SCRIPT)): whether it
    /// does.
    async fn renew(&mut self, lease: &str) -> anyhow::Result<bool> {
        let renewed: i64 = self
            .scripts
            .renew
            .key(lease)
            .arg(&self.name)
            .arg(self.lease_ms)
            .invoke_async(&mut self.writer)
            .await
            .context("renewing a lease failed")?;
        Ok(renewed == 1)
    }

    /// Drops the windows of servers silent for longer than the longest window (their next metric
    /// starts every window afresh: nothing is lost), then, if more than [`MAX_SERVERS_PER_WORKER`]
    /// remain, the least recently seen (counted: their next windows miss what came before).
    fn forget_quiet_servers(&mut self) {
        let quiet = Duration::from_millis(self.span_ms() + REBUILD_SLACK_MS);
        let mut total = 0;
        for owned in self.owned.values_mut() {
            owned.servers.retain(|_, s| s.last_seen.elapsed() < quiet);
            total += owned.servers.len();
        }
        if total <= MAX_SERVERS_PER_WORKER {
            return;
        }
        let mut seen: Vec<Instant> = self
            .owned
            .values()
            .flat_map(|o| o.servers.values().map(|s| s.last_seen))
            .collect();
        seen.sort_unstable();
        let cut = seen[total - MAX_SERVERS_PER_WORKER];
        let mut evicted = 0;
        for owned in self.owned.values_mut() {
            owned.servers.retain(|_, s| {
                let keep = s.last_seen >= cut;
                evicted += usize::from(!keep);
                keep
            });
        }
        self.stats.evicted.inc_by(evicted as u64);
        tracing::warn!(worker = %self.name, evicted, max = MAX_SERVERS_PER_WORKER, "too many servers for one worker: dropped the windows of the least recently seen");
    }

    /// The longest window, in ms.
    fn span_ms(&self) -> u64 {
        self.spec.lengths_ms().last().copied().unwrap_or(0)
    }

    /// Makes partition `p` this worker's for real: claims every entry pending in it (whoever read
    /// them: the lease says they are gone, or they were this worker's own), then rebuilds its servers'
    /// windows from the entries already processed, and marks the claimed ones to be processed next.
    pub(super) async fn adopt(&mut self, p: usize) -> anyhow::Result<Outcome> {
        let stream = self.owned[&p].stream.clone();
        // Whose entries are pending: this worker's own (after a failure) are not "claimed".
        let summary: Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(&self.group)
            .query_async(&mut self.writer)
            .await
            .context("XPENDING failed")?;
        let own = own_pending(&summary, &self.name);
        let mut pending: HashSet<String> = HashSet::new();
        let mut trimmed = 0;
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(CHUNK)
                .arg("JUSTID")
                .query_async(&mut self.writer)
                .await
                .context("XAUTOCLAIM failed")?;
            let (next, ids, deleted) = autoclaim_ids(&reply)?;
            pending.extend(ids);
            trimmed += deleted;
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        if trimmed > 0 {
            self.count_trimmed(p, trimmed).await?;
        }
        let claimed = pending.len().saturating_sub(own);

        // Replay what was processed: delivered (up to the group's last-delivered-id), not pending.
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut self.writer)
            .await
            .context("XINFO GROUPS failed")?;
        let mut servers: HashMap<String, ServerState> = HashMap::new();
        let mut replayed = 0;
        if let Some(last) = last_delivered_id(&groups, &self.group)?.filter(|id| id != "0-0") {
            let last_ms: u64 = last
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .with_context(|| format!("unexpected last-delivered-id {last}"))?;
            let mut from = format!("{}-0", last_ms.saturating_sub(self.span_ms() + REBUILD_SLACK_MS));
            let now = Instant::now();
            loop {
                let reply: Value = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&from)
                    .arg(&last)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async(&mut self.writer)
                    .await
                    .context("XRANGE failed")?;
                let entries = entry_list(&reply)?;
                for entry in &entries {
                    if pending.contains(entry.id) {
                        continue;
                    }
                    let Ok(metric) = system1::from_stream_fields(entry.field_pairs()) else {
                        continue;
                    };
                    let Some(identity) = Identity::of(&metric, entry.id) else {
                        continue;
                    };
                    let state = servers
                        .entry(metric.server_id.clone())
                        .or_insert_with(|| ServerState::new(&self.spec, self.capacity, now));
                    if state.known.insert(identity) {
                        state.windows.add(metric.timestamp, &metric.metrics);
                        replayed += 1;
                    }
                }
                match entries.last() {
                    Some(last_read) if entries.len() == CHUNK => from = format!("({}", last_read.id),
                    _ => break,
                }
            }
        }
        self.stats.replayed.inc_by(replayed as u64);
        tracing::info!(worker = %self.name, partition = p, replayed, servers = servers.len(), pending = pending.len(), claimed, "rebuilt the partition's windows");
        let owned = self.owned.get_mut(&p).expect("adopting an owned partition");
        owned.servers = servers;
        owned.rebuild = false;
        owned.resume_pending = true;
        Ok(Outcome::claims(claimed, trimmed))
    }

    /// Gives every partition back and leaves the group's members (a graceful stop): the others take
    /// the partitions at their next look, instead of when the leases lapse. Best effort: if Redis is
    /// away, the leases lapse by themselves: the whole goodbye is given `LEAVE_TIMEOUT` (1 s), so that a
    /// worker stopping while Redis is gone stops at once instead of waiting on its reconnections. A
    /// worker stepped again afterwards joins again.
    pub async fn leave(&mut self) {
        if tokio::time::timeout(LEAVE_TIMEOUT, self.give_everything_back())
            .await
            .is_err()
        {
            tracing::info!(worker = %self.name, "Redis did not answer the goodbye in time: the leases will lapse");
        }
    }

    async fn give_everything_back(&mut self) {
        self.last_maintenance = None;
        let owned = std::mem::take(&mut self.owned);
        for (p, owned) in owned {
            let released: redis::RedisResult<i64> = self
                .scripts
                .release
                .key(&owned.lease)
                .arg(&self.name)
                .invoke_async(&mut self.writer)
                .await;
            if let Err(e) = released {
                tracing::debug!(worker = %self.name, partition = p, error = %e, "could not give the partition back: its lease will lapse");
            }
        }
        let left: redis::RedisResult<i64> = self
            .scripts
            .leave
            .key(self.partitions.members(&self.group))
            .arg(&self.name)
            .invoke_async(&mut self.writer)
            .await;
        if let Err(e) = left {
            tracing::debug!(worker = %self.name, error = %e, "could not leave the group's members: the heartbeat will lapse");
        }
    }
}

/// How many entries the `XPENDING <stream> <group>` summary `[count, min, max, [[consumer, n], …]]`
/// gives `name`.
fn own_pending(summary: &Value, name: &str) -> usize {
    let Value::Array(parts) = summary else { return 0 };
    let Some(Value::Array(consumers)) = parts.get(3) else {
        return 0;
    };
    consumers
        .iter()
        .find_map(|c| match c {
            Value::Array(pair) if pair.len() == 2 => {
                let who = redis::from_redis_value_ref::<String>(&pair[0]).ok()?;
                let n = redis::from_redis_value_ref::<String>(&pair[1]).ok()?;
                (who == name).then(|| n.parse().ok()).flatten()
            }
            _ => None,
        })
        .unwrap_or(0)
}
