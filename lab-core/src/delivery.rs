//! One dashboard connection's delivery loop, the same for both systems: heartbeat, slow-dashboard
//! check, the client's messages, and the outbox's updates out, until one of them ends it.
//!
//! ```text
//!            ┌──────────────── run(connection, handler, timing, shutdown) ────────────────┐
//! shutdown ──▶ 1001, always first (biased select)                                        │
//! ping tick ─▶ nothing heard since the last ping? 4000 (heartbeat) : send a ping          │
//! slow tick ─▶ the outbox backed up longer than `timing.slow`? 1008 (slow dashboard)      │
//! message ───▶ handler.on_message(bytes) ─▶ its replies fed; the messages already waiting │
//!              too (up to MESSAGES_PER_WAKE), then one flush                              │
//! outbox ────▶ a gap frame for what it dropped, then up to UPDATES_PER_WAKE updates       │
//!              (one frame each, or one metric.updates batch), fed, then one flush         │
//!            └── every write bounded by `timing.slow`: a peer that stops reading is 1008 ─┘
//! ```
//!
//! **Why one loop for two systems.** What a dashboard experiences — how often it is pinged, when it
//! counts as slow, that a gap frame comes before the updates it is about, that a burst of ready updates
//! costs one flush — is the lesson's *policy*, not either system's transport. System 1's broadcaster
//! (events read from Redis) and System 2's connections (updates computed in memory) both hand their
//! updates to a [`crate::outbox::Outbox`] and let this loop deliver them, so a difference a student
//! measures between them is never a difference in delivery.
//!
//! **Why generic over a `Stream` and a `Sink`.** The loop speaks this module's own [`Message`], so the
//! core stays free of any web framework; each server wraps its WebSocket in an adapter that maps its
//! library's messages to these (`lab_ops::ws::Socket` for axum). The tests below drive the loop with
//! plain channels: no socket, no server.
//!
//! **What differs lives in the [`Handler`]:** how a client's message is answered (System 1: subscribe
//! and snapshots from Redis; System 2: registration, metrics, acks), which outbox the connection has
//! (none, until a System 2 client registers as a dashboard), and what is counted.
//!
//! **Feed, then flush.** Replies and updates are *fed* into the sink (buffered) and flushed once per
//! burst, not once per message: a burst of a hundred acks costs one write, which is what lets one
//! connection carry hundreds of thousands of metrics per second.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::time::{MissedTickBehavior, interval, interval_at, timeout};

use crate::outbox::{FrameText, Outbox, batch_frame};
use crate::wire::close::CloseReason;
use crate::wire::gap::Gap;

/// Most client messages handled per wake-up before the loop looks at its other duties (heartbeat,
/// shutdown, outbox): fairness, and a bound on the replies buffered before a flush.
pub const MESSAGES_PER_WAKE: usize = 256;

/// Most updates sent per wake-up of a dashboard, and most items in one `metric.updates` frame. More
/// waiting: the loop wakes itself again after looking at its other duties.
pub const UPDATES_PER_WAKE: usize = 256;

/// How long the server tries to deliver a close frame before it just drops the connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A WebSocket message, in either direction, as the loop sees it. `F` is the text type: the server's
/// reference-counted frame text (axum's `Utf8Bytes`), so that relaying an update copies no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<F> {
    /// A text message: JSON, in this lab.
    Text(F),
    /// A binary message (the original's `ws` server parsed these as JSON too).
    Binary(Vec<u8>),
    /// A ping: the server sends them as its heartbeat (their content is not used).
    Ping,
    /// A pong: the client's answer to a ping (its WebSocket library sends it by itself).
    Pong,
    /// A close frame: the reason the server sends; from the client, its reason is not used (`None`).
    Close(Option<CloseReason>),
}

/// Why reading the client's next message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The client broke the protocol (a frame too big, text that is not UTF-8, a bad frame): it is
    /// told why with this close code before the connection closes.
    Refused(CloseReason),
    /// The connection broke (reset, end of stream): nobody is left to tell.
    Broken,
}

/// What happened after a step: go on (`Ok`), or end the connection, with a close frame to send
/// (`Err(Some(reason))`) or without one (`Err(None)`: the client left, or the connection broke).
pub type Flow = Result<(), Option<CloseReason>>;

/// The loop's clocks, from each server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the server pings. A client from which nothing (not even a pong) arrived between two
    /// pings is closed with 4000: its connection is dead, even if TCP has not noticed.
    pub ping_every: Duration,
    /// How long a dashboard's outbox may stay backed up before it is closed with 1008, and how long any
    /// one write may take (a peer that does not read would otherwise hold the loop for ever).
    pub slow: Duration,
}

/// What a server decides for its connection; the loop does the rest.
pub trait Handler<F: FrameText>: Send {
    /// Answers one text or binary message from the client: replies are pushed into `replies` (the loop
    /// feeds them, in order, right after, and flushes after the burst); an `Err` ends the connection
    /// (after the replies pushed so far).
    fn on_message(&mut self, bytes: &[u8], replies: &mut Vec<F>) -> impl Future<Output = Flow> + Send;

    /// The outbox this connection delivers from, if it has one now. Asked again after every step, so
    /// a handler may replace it (a System 1 dashboard's new filter) or make one (a System 2 client that
    /// registers as a dashboard).
    fn outbox(&self) -> Option<&Arc<Outbox<F>>>;

    /// The `eventType` of the gap frames that tell this dashboard what its outbox dropped.
    fn gap_event_type(&self) -> &'static str;

    /// Called as updates are taken from the outbox to be sent: `gap` if a gap frame goes first, and how
    /// many updates follow. For counters; the default counts nothing.
    fn on_send(&mut self, gap: bool, updates: usize) {
        let _ = (gap, updates);
    }
}

/// Runs one connection until the client leaves, a limit closes it, or `shutdown` completes. Returns the
/// close frame's reason, if one is to be sent (with [`close`]); `None` if nobody is left to tell.
pub async fn run<F, C, H>(
    connection: &mut C,
    handler: &mut H,
    timing: Timing,
    shutdown: impl Future<Output = ()> + Send,
) -> Option<CloseReason>
where
    F: FrameText,
    C: Stream<Item = Result<Message<F>, ReadError>> + Sink<Message<F>> + Unpin + Send,
    H: Handler<F>,
{
    let mut ping = interval_at(tokio::time::Instant::now() + timing.ping_every, timing.ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Four looks per limit: a dashboard is closed at most a quarter of the limit after it ran out.
    let mut slow_check = interval((timing.slow / 4).max(Duration::from_millis(10)));
    slow_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A `maxHz` dashboard is sent its latest updates on this tick instead of on every push; replaced
    // by one at its rate once it has such an outbox.
    let mut hz_tick = interval(Duration::from_secs(3600));
    hz_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Whether anything (a message, a pong) arrived since the last ping.
    let mut heard_from = true;
    // The handler's replies, reused: no allocation per message.
    let mut replies: Vec<F> = Vec::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let outbox = handler.outbox().cloned();
        let every_update = outbox.as_ref().is_some_and(|o| o.preferences.max_hz.is_none());
        let limited = outbox.as_ref().is_some_and(|o| o.preferences.max_hz.is_some());
        let flow: Flow = tokio::select! {
            biased;
            _ = &mut shutdown => Err(Some(CloseReason::Shutdown)),
            _ = ping.tick() => {
                if heard_from {
                    heard_from = false;
                    send(connection, Message::Ping, timing.slow).await
                } else {
                    Err(Some(CloseReason::Heartbeat))
                }
            }
            _ = slow_check.tick(), if outbox.is_some() => {
                match outbox.as_ref().and_then(|o| o.backed_up_for()) {
                    Some(d) if d > timing.slow => Err(Some(CloseReason::SlowDashboard)),
                    _ => Ok(()),
                }
            }
            incoming = connection.next() => {
                on_incoming(connection, handler, incoming, &mut heard_from, &mut replies, timing.slow).await
            }
            _ = async { outbox.as_ref().expect("guarded").ready().await }, if every_update => {
                send_updates(connection, handler, outbox.as_ref().expect("guarded"), timing.slow).await
            }
            _ = hz_tick.tick(), if limited => {
                send_updates(connection, handler, outbox.as_ref().expect("guarded"), timing.slow).await
            }
        };
        if let Err(reason) = flow {
            return reason;
        }
        // A dashboard just got a maxHz outbox: tick at its rate from now on.
        if let Some(hz) = handler.outbox().and_then(|o| o.preferences.max_hz) {
            let period = Duration::from_secs_f64(1.0 / f64::from(hz.max(1)));
            if hz_tick.period() != period {
                hz_tick = interval(period);
                hz_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            }
        }
    }
}

/// Handles the message that woke the loop and every further one already waiting (up to
/// [`MESSAGES_PER_WAKE`]), feeding each one's replies, then flushes once.
async fn on_incoming<F, C, H>(
    connection: &mut C,
    handler: &mut H,
    first: Option<Result<Message<F>, ReadError>>,
    heard_from: &mut bool,
    replies: &mut Vec<F>,
    slow: Duration,
) -> Flow
where
    F: FrameText,
    C: Stream<Item = Result<Message<F>, ReadError>> + Sink<Message<F>> + Unpin + Send,
    H: Handler<F>,
{
    let mut next = first;
    let mut handled = 0;
    loop {
        let message = match next {
            None | Some(Err(ReadError::Broken)) => return Err(None),
            Some(Err(ReadError::Refused(reason))) => return Err(Some(reason)),
            Some(Ok(message)) => message,
        };
        *heard_from = true;
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            // Pongs answer our pings: hearing them is all they are for.
            Message::Ping | Message::Pong => &[],
            Message::Close(_) => return Err(None),
        };
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            let flow = handler.on_message(bytes, replies).await;
            for reply in replies.drain(..) {
                feed(connection, Message::Text(reply), slow).await?;
            }
            flow?;
        }
        handled += 1;
        // The budget is checked *before* the next message is taken: a message taken from the
        // connection is a message owed an answer. (Checking it after, as a `for` loop over the budget
        // does, took a 257th message at the end of every full burst and dropped it unanswered.)
        if handled == MESSAGES_PER_WAKE {
            break;
        }
        // Poll once: `next` is cancel-safe, so dropping a *pending* call loses nothing.
        match connection.next().now_or_never() {
            Some(more) => next = more,
            None => break,
        }
    }
    flush(connection, slow).await
}

/// Sends what the outbox holds: first a gap frame for what it dropped (so the dashboard hears of it in
/// order with what it does get), then each update as its own frame, or all as one `metric.updates`.
async fn send_updates<F, C, H>(
    connection: &mut C,
    handler: &mut H,
    outbox: &Outbox<F>,
    slow: Duration,
) -> Flow
where
    F: FrameText,
    C: Sink<Message<F>> + Unpin,
    H: Handler<F>,
{
    let gap = outbox
        .take_dropped()
        .map(|dropped| Gap::dropped(handler.gap_event_type(), dropped));
    let updates = outbox.take(UPDATES_PER_WAKE);
    handler.on_send(gap.is_some(), updates.len());
    let told_gap = gap.is_some();
    if let Some(gap) = gap {
        feed(connection, Message::Text(F::from(gap.to_frame())), slow).await?;
    }
    if updates.is_empty() {
        // Nothing fed, nothing to flush: a wake-up with nothing to send costs no write.
        return if told_gap {
            flush(connection, slow).await
        } else {
            Ok(())
        };
    }
    if outbox.preferences.batch {
        feed(connection, Message::Text(F::from(batch_frame(&updates))), slow).await?;
    } else {
        for update in &updates {
            feed(connection, Message::Text(update.frame.clone()), slow).await?;
        }
    }
    if updates.len() == UPDATES_PER_WAKE && outbox.preferences.max_hz.is_none() {
        // More may be waiting: come back after looking at the other duties.
        outbox.wake();
    }
    flush(connection, slow).await
}

/// A write bounded by `slow`: done, the connection broke (`Err(None)`), or the peer stopped reading
/// (`Err(Some(WriteStalled))`).
async fn bounded<E>(slow: Duration, write: impl Future<Output = Result<(), E>>) -> Flow {
    match timeout(slow, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(CloseReason::WriteStalled)),
    }
}

/// Buffers `message` in the connection without flushing, within `slow`.
pub async fn feed<F, C: Sink<Message<F>> + Unpin>(
    connection: &mut C,
    message: Message<F>,
    slow: Duration,
) -> Flow {
    bounded(slow, connection.feed(message)).await
}

/// Writes out everything fed so far, within `slow`.
pub async fn flush<F, C: Sink<Message<F>> + Unpin>(connection: &mut C, slow: Duration) -> Flow {
    bounded(slow, connection.flush()).await
}

/// Sends `message` at once (fed and flushed), within `slow`: a greeting, a ping.
pub async fn send<F, C: Sink<Message<F>> + Unpin>(
    connection: &mut C,
    message: Message<F>,
    slow: Duration,
) -> Flow {
    bounded(slow, connection.send(message)).await
}

/// Sends the close frame for `reason`, within [`CLOSE_TIMEOUT`]; a peer that cannot take it is just
/// dropped.
pub async fn close<F, C: Sink<Message<F>> + Unpin>(connection: &mut C, reason: CloseReason) {
    let _ = timeout(CLOSE_TIMEOUT, connection.send(Message::Close(Some(reason)))).await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;
    use tokio_util::sync::PollSender;

    use super::*;
    use crate::outbox::{Preferences, Update};

    type Text = String;

    /// A connection made of two channels: what the "client" sends comes out of `incoming`; what the
    /// loop writes goes into `outgoing`, whose capacity the test chooses (a small one that nobody reads
    /// is a client that stopped reading).
    struct Pipe {
        incoming: mpsc::UnboundedReceiver<Result<Message<Text>, ReadError>>,
        outgoing: PollSender<Message<Text>>,
    }

    impl Stream for Pipe {
        type Item = Result<Message<Text>, ReadError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.incoming.poll_recv(cx)
        }
    }

    impl Sink<Message<Text>> for Pipe {
        type Error = tokio_util::sync::PollSendError<Message<Text>>;
        fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing).poll_ready(cx)
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message<Text>) -> Result<(), Self::Error> {
            Pin::new(&mut self.outgoing).start_send(item)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Pin::new(&mut self.outgoing).poll_close(cx)
        }
    }

    /// The client's side of a [`Pipe`].
    struct Client {
        send: mpsc::UnboundedSender<Result<Message<Text>, ReadError>>,
        received: mpsc::Receiver<Message<Text>>,
    }

    fn connect(capacity: usize) -> (Pipe, Client) {
        let (send, incoming) = mpsc::unbounded_channel();
        let (outgoing, received) = mpsc::channel(capacity);
        let pipe = Pipe {
            incoming,
            outgoing: PollSender::new(outgoing),
        };
        (pipe, Client { send, received })
    }

    /// A handler that echoes each message upper-cased, with an optional outbox.
    struct Echo {
        outbox: Option<Arc<Outbox<Text>>>,
        sent: usize,
        gaps: usize,
    }

    impl Handler<Text> for Echo {
        async fn on_message(&mut self, bytes: &[u8], replies: &mut Vec<Text>) -> Flow {
            let text = std::str::from_utf8(bytes).unwrap();
            if text == "bye" {
                return Err(Some(CloseReason::RateLimit));
            }
            replies.push(text.to_uppercase());
            Ok(())
        }
        fn outbox(&self) -> Option<&Arc<Outbox<Text>>> {
            self.outbox.as_ref()
        }
        fn gap_event_type(&self) -> &'static str {
            "metric.update"
        }
        fn on_send(&mut self, gap: bool, updates: usize) {
            self.gaps += usize::from(gap);
            self.sent += updates;
        }
    }

    fn dashboard(capacity: usize) -> Arc<Outbox<Text>> {
        let preferences = Preferences {
            filter: None,
            max_hz: None,
            batch: false,
        };
        Arc::new(Outbox::new(1, preferences, capacity))
    }

    fn echo(outbox: Option<Arc<Outbox<Text>>>) -> Echo {
        Echo {
            outbox,
            sent: 0,
            gaps: 0,
        }
    }

    const TIMING: Timing = Timing {
        ping_every: Duration::from_millis(100),
        slow: Duration::from_millis(200),
    };

    fn update(server: &str, n: u32) -> Arc<Update<Text>> {
        Arc::new(Update::new(
            server,
            &format!(r#"{{"serverId":"{server}","n":{n}}}"#),
        ))
    }

    #[tokio::test]
    async fn messages_are_answered_and_updates_delivered_in_order() {
        let (mut pipe, mut client) = connect(64);
        let outbox = dashboard(10);
        let mut handler = echo(Some(outbox.clone()));
        outbox.push(&update("a", 1));
        outbox.push(&update("a", 2));
        client.send.send(Ok(Message::Text("hello".into()))).unwrap();
        client.send.send(Ok(Message::Text("bye".into()))).unwrap();
        let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
        assert_eq!(
            reason,
            Some(CloseReason::RateLimit),
            "the handler's reason ends it"
        );
        let mut got = Vec::new();
        while let Ok(m) = client.received.try_recv() {
            got.push(m);
        }
        // The client's messages are looked at before the outbox: the handler ended the connection
        // before the updates' turn.
        assert_eq!(got, [Message::Text("HELLO".into())]);
        let (mut pipe, mut client) = connect(64);
        client.send.send(Ok(Message::Close(None))).unwrap();
        let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
        assert_eq!(reason, None, "a client that closes is not told anything");
        let got: Vec<_> = std::iter::from_fn(|| client.received.try_recv().ok()).collect();
        assert_eq!(got, [], "closing came before the outbox's turn");
        assert_eq!(handler.sent, 0);
    }

    #[tokio::test]
    async fn the_outbox_is_delivered_with_its_gap_first() {
        let (mut pipe, mut client) = connect(64);
        let outbox = dashboard(1);
        outbox.push(&update("a", 1)); // queued
        outbox.push(&update("b", 1)); // kept in the table
        outbox.push(&update("c", 1)); // dropped: the table holds one server
        let mut handler = echo(Some(outbox.clone()));
        let task = tokio::spawn(async move {
            let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
            (reason, handler.sent, handler.gaps)
        });
        let mut frames = Vec::new();
        for _ in 0..3 {
            match client.received.recv().await.unwrap() {
                Message::Text(t) => frames.push(t),
                other => panic!("{other:?}"),
            }
        }
        assert!(
            frames[0].starts_with(r#"{"type":"gap","eventType":"metric.update","events":1,"#),
            "{}",
            frames[0]
        );
        assert_eq!(
            frames[1],
            r#"{"type":"metric.update","payload":{"serverId":"a","n":1}}"#
        );
        assert_eq!(
            frames[2],
            r#"{"type":"metric.update","payload":{"serverId":"b","n":1}}"#
        );
        drop(client.send);
        let (reason, sent, gaps) = task.await.unwrap();
        assert_eq!(
            (reason, sent, gaps),
            (None, 2, 1),
            "the client went away: nobody to tell"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_pinged_then_closed_by_the_heartbeat() {
        let (mut pipe, mut client) = connect(64);
        let mut handler = echo(None);
        let started = tokio::time::Instant::now();
        let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
        assert_eq!(reason, Some(CloseReason::Heartbeat));
        assert!(
            started.elapsed() >= 2 * TIMING.ping_every,
            "one ping first, then the close"
        );
        assert_eq!(client.received.try_recv().unwrap(), Message::Ping);
    }

    #[tokio::test]
    async fn a_client_that_answers_pings_stays() {
        let (mut pipe, mut client) = connect(64);
        let mut handler = echo(None);
        let task = tokio::spawn(async move {
            let stop = tokio::time::sleep(TIMING.ping_every * 5);
            run(&mut pipe, &mut handler, TIMING, stop).await
        });
        while let Some(message) = client.received.recv().await {
            match message {
                Message::Ping => client.send.send(Ok(Message::Pong)).unwrap(),
                Message::Close(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            task.await.unwrap(),
            Some(CloseReason::Shutdown),
            "alive until shutdown"
        );
    }

    /// A client that reads, but slowly: every write takes [`Sluggish::DELAY`] (each one well within
    /// the write limit), and it never sends anything.
    struct Sluggish {
        wait: Option<Pin<Box<tokio::time::Sleep>>>,
        written: usize,
    }

    impl Sluggish {
        const DELAY: Duration = Duration::from_millis(20);
    }

    impl Stream for Sluggish {
        type Item = Result<Message<Text>, ReadError>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    impl Sink<Message<Text>> for Sluggish {
        type Error = std::convert::Infallible;
        fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if let Some(wait) = self.wait.as_mut() {
                std::task::ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, _: Message<Text>) -> Result<(), Self::Error> {
            self.written += 1;
            self.wait = Some(Box::pin(tokio::time::sleep(Self::DELAY)));
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_ready(cx)
        }
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.poll_ready(cx)
        }
    }

    #[tokio::test]
    async fn a_dashboard_that_cannot_keep_up_is_closed_as_slow() {
        let mut sluggish = Sluggish {
            wait: None,
            written: 0,
        };
        let outbox = dashboard(4);
        let mut handler = echo(Some(outbox.clone()));
        // Updates arrive faster than the client takes them: its queue stays full.
        let producer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    outbox.push(&update(&format!("s{}", n % 100), n));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        // The heartbeat kept out of the way: this client never answers pings.
        let timing = Timing {
            ping_every: Duration::from_secs(60),
            slow: Duration::from_millis(100),
        };
        let reason = run(&mut sluggish, &mut handler, timing, std::future::pending()).await;
        producer.abort();
        assert_eq!(
            reason,
            Some(CloseReason::SlowDashboard),
            "every write kept within the limit"
        );
        assert!(sluggish.written > 0, "it was being served, slowly");
        assert!(handler.gaps > 0, "and told of what it missed");
    }

    #[tokio::test]
    async fn a_write_that_stalls_closes_the_connection() {
        let (mut pipe, _client) = connect(1);
        let outbox = dashboard(1000);
        for n in 0..10 {
            outbox.push(&update("a", n));
        }
        let mut handler = echo(Some(outbox));
        let timing = Timing {
            ping_every: Duration::from_secs(60),
            slow: Duration::from_millis(50),
        };
        let started = tokio::time::Instant::now();
        let reason = run(&mut pipe, &mut handler, timing, std::future::pending()).await;
        assert_eq!(
            reason,
            Some(CloseReason::WriteStalled),
            "the outbox itself is not backed up"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn shutdown_closes_first_and_close_sends_the_reason() {
        let (mut pipe, mut client) = connect(64);
        let outbox = dashboard(10);
        outbox.push(&update("a", 1));
        client.send.send(Ok(Message::Text("hi".into()))).unwrap();
        let mut handler = echo(Some(outbox));
        let reason = run(&mut pipe, &mut handler, TIMING, async {}).await;
        assert_eq!(
            reason,
            Some(CloseReason::Shutdown),
            "shutdown wins over waiting work"
        );
        close(&mut pipe, CloseReason::Shutdown).await;
        assert_eq!(
            client.received.recv().await.unwrap(),
            Message::Close(Some(CloseReason::Shutdown))
        );
    }

    #[tokio::test]
    async fn a_refused_read_closes_with_its_reason() {
        let (mut pipe, client) = connect(64);
        client
            .send
            .send(Err(ReadError::Refused(CloseReason::TooBig)))
            .unwrap();
        let mut handler = echo(None);
        let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
        assert_eq!(reason, Some(CloseReason::TooBig));
    }

    #[tokio::test]
    async fn a_full_burst_is_answered_and_the_rest_handled_next() {
        let (mut pipe, mut client) = connect(2 * MESSAGES_PER_WAKE);
        for i in 0..MESSAGES_PER_WAKE + 3 {
            client.send.send(Ok(Message::Text(format!("m{i}")))).unwrap();
        }
        client.send.send(Ok(Message::Text("bye".into()))).unwrap();
        let mut handler = echo(None);
        let reason = run(&mut pipe, &mut handler, TIMING, std::future::pending()).await;
        assert_eq!(reason, Some(CloseReason::RateLimit));
        let got: Vec<_> = std::iter::from_fn(|| client.received.try_recv().ok()).collect();
        assert_eq!(
            got.len(),
            MESSAGES_PER_WAKE + 3,
            "every message taken was answered"
        );
        assert_eq!(
            got.last(),
            Some(&Message::Text(format!("M{}", MESSAGES_PER_WAKE + 2)))
        );
    }
}
