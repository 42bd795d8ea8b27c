//! Tree events: what happened in a supervision tree, as one serializable stream that
//! several observers can follow at run time.
//!
//! Hazard: an observer must never slow the supervisor down or make it block. Events go
//! out on a bounded [`tokio::sync::broadcast`] channel: `send` never waits, and an
//! observer that falls more than [`EVENT_BUFFER`] events behind loses the oldest ones
//! and is told how many ([`next_event`] turns that into [`TreeEvent::Lagged`]).
//! Times are offsets from the tree's start (the time base of the exit report); in
//! memory they are exact, on the wire they are whole milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::exit::{ExitClass, Termination};

/// Events an observer may fall behind by before it starts losing the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// Something that happened in the tree. One JSON object per event, tagged by `event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TreeEvent {
    /// A child is up: spawned and, if it has a readiness check, ready.
    Started {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// The process id, for process children.
        pid: Option<i32>,
    },
    /// A child ended on its own or failed to start.
    Exited {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// What happened.
        termination: Termination,
        /// How the one classifier counted it.
        class: ExitClass,
    },
    /// The policy restarts `path` (and, for group strategies, the children in `start`)
    /// after `delay`; the siblings in `stop` were stopped first.
    Restarting {
        /// The child that ended.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// Its attempt number (1 after a backoff reset).
        attempt: u32,
        /// How long until the start.
        #[serde(rename = "delay_ms", with = "ms")]
        delay: Duration,
        /// Running siblings stopped first, in stop order (paths).
        stop: Vec<String>,
        /// Children to start, in start order (paths).
        start: Vec<String>,
    },
    /// The child ended and stays down (temporary, transient after a clean exit, or a
    /// permanent exit code).
    LeftDown {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
    },
    /// A significant child ended for good: its supervisor shuts down.
    SignificantEnded {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// Whether that ending was clean.
        clean: bool,
    },
    /// Restart intensity exceeded by `path`'s ending: its supervisor gives up and
    /// escalates to its parent.
    Escalated {
        /// The child whose ending went over budget.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
    },
    /// A graceful stop of a running child began (group restart, operator restart,
    /// removal, shutdown).
    Stopping {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
    },
    /// A child was stopped on purpose and is down.
    Stopped {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
    },
    /// A child was added to a running supervisor at `index` of its start order.
    Added {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// Its place in the start order.
        index: usize,
    },
    /// A child was stopped and removed from its supervisor.
    Removed {
        /// `root/sub/name`.
        path: String,
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
    },
    /// The node began its graceful shutdown.
    ShuttingDown {
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// Why (`SIGTERM`, `ctl stop`, ...).
        reason: String,
    },
    /// The node ended with exit code `code`. The last event of a tree.
    NodeExited {
        /// Since the tree started.
        #[serde(rename = "at_ms", with = "ms")]
        at: Duration,
        /// The exit code (docs/exit-codes.md).
        code: i32,
    },
    /// Never published by the tree: the first line of a subscriber's stream, sent once
    /// it is subscribed (every later event reaches it).
    Subscribed,
    /// Never published by the tree: this subscriber fell behind and `missed` events were
    /// dropped here.
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl TreeEvent {
    /// The child path the event is about, if it is about one child.
    pub fn path(&self) -> Option<&str> {
        match self {
            TreeEvent::Started { path, .. }
            | TreeEvent::Exited { path, .. }
            | TreeEvent::Restarting { path, .. }
            | TreeEvent::LeftDown { path, .. }
            | TreeEvent::SignificantEnded { path, .. }
            | TreeEvent::Escalated { path, .. }
            | TreeEvent::Stopping { path, .. }
            | TreeEvent::Stopped { path, .. }
            | TreeEvent::Added { path, .. }
            | TreeEvent::Removed { path, .. } => Some(path),
            TreeEvent::ShuttingDown { .. }
            | TreeEvent::NodeExited { .. }
            | TreeEvent::Subscribed
            | TreeEvent::Lagged { .. } => None,
        }
    }

    /// When it happened, since the tree started (none for the stream markers).
    pub fn at(&self) -> Option<Duration> {
        match self {
            TreeEvent::Started { at, .. }
            | TreeEvent::Exited { at, .. }
            | TreeEvent::Restarting { at, .. }
            | TreeEvent::LeftDown { at, .. }
            | TreeEvent::SignificantEnded { at, .. }
            | TreeEvent::Escalated { at, .. }
            | TreeEvent::Stopping { at, .. }
            | TreeEvent::Stopped { at, .. }
            | TreeEvent::Added { at, .. }
            | TreeEvent::Removed { at, .. }
            | TreeEvent::ShuttingDown { at, .. }
            | TreeEvent::NodeExited { at, .. } => Some(*at),
            TreeEvent::Subscribed | TreeEvent::Lagged { .. } => None,
        }
    }
}

/// Where a tree publishes its events; cloneable, and all it lets others do is subscribe.
#[derive(Clone, Debug)]
pub struct EventFeed {
    sender: broadcast::Sender<TreeEvent>,
}

impl Default for EventFeed {
    fn default() -> EventFeed {
        EventFeed { sender: broadcast::channel(EVENT_BUFFER).0 }
    }
}

impl EventFeed {
    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TreeEvent> {
        self.sender.subscribe()
    }

    /// How many receivers are subscribed now.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// Publishes `event` to the current subscribers. Never blocks; with no subscriber
    /// the event is dropped.
    pub(crate) fn publish(&self, event: TreeEvent) {
        let _ = self.sender.send(event);
    }
}

/// The next event of a subscription: a lag becomes [`TreeEvent::Lagged`]; `None` once the
/// tree ended (after [`TreeEvent::NodeExited`], or when every sender is gone).
pub async fn next_event(
    receiver: &mut broadcast::Receiver<TreeEvent>,
    ended: &mut bool,
) -> Option<TreeEvent> {
    if *ended {
        return None;
    }
    match receiver.recv().await {
        Ok(event) => {
            *ended = matches!(event, TreeEvent::NodeExited { .. });
            Some(event)
        }
        Err(broadcast::error::RecvError::Lagged(missed)) => Some(TreeEvent::Lagged { missed }),
        Err(broadcast::error::RecvError::Closed) => {
            *ended = true;
            None
        }
    }
}

/// Durations as whole milliseconds on the wire.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let events = vec![
            TreeEvent::Started { path: "root/a".into(), at: ms(5), pid: Some(42) },
            TreeEvent::Exited {
                path: "root/a".into(),
                at: ms(7),
                termination: Termination::Exited {
                    code: None,
                    signal: Some(9),
                    stop_requested: false,
                    forced: false,
                },
                class: ExitClass::Crash,
            },
            TreeEvent::Restarting {
                path: "root/a".into(),
                at: ms(7),
                attempt: 1,
                delay: ms(100),
                stop: vec![],
                start: vec!["root/a".into()],
            },
            TreeEvent::Added { path: "root/b".into(), at: ms(9), index: 1 },
            TreeEvent::ShuttingDown { at: ms(10), reason: "SIGTERM".into() },
            TreeEvent::NodeExited { at: ms(11), code: 137 },
            TreeEvent::Lagged { missed: 3 },
            TreeEvent::Subscribed,
        ];
        for event in events {
            let line = serde_json::to_string(&event).unwrap();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(serde_json::from_str::<TreeEvent>(&line).unwrap(), event, "{line}");
        }
        let line =
            serde_json::to_string(&TreeEvent::Escalated { path: "root/x".into(), at: ms(3) })
                .unwrap();
        assert_eq!(line, r#"{"event":"escalated","path":"root/x","at_ms":3}"#);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_many_it_missed_and_the_feed_never_blocks() {
        let feed = EventFeed::default();
        let mut slow = feed.subscribe();
        let n = EVENT_BUFFER as u64 + 10;
        for i in 0..n {
            feed.publish(TreeEvent::Stopped { path: format!("root/c{i}"), at: ms(i) });
        }
        let mut ended = false;
        assert_eq!(next_event(&mut slow, &mut ended).await, Some(TreeEvent::Lagged { missed: 10 }));
        let next = next_event(&mut slow, &mut ended).await.unwrap();
        assert_eq!(next.path(), Some("root/c10"));
        feed.publish(TreeEvent::NodeExited { at: ms(n), code: 0 });
        let mut last = None;
        while let Some(event) = next_event(&mut slow, &mut ended).await {
            last = Some(event);
        }
        assert_eq!(last, Some(TreeEvent::NodeExited { at: ms(n), code: 0 }));
    }
}
